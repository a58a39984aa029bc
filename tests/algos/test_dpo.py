"""The sigmoid DPO loss against hand-computed values."""
import math

import pytest
import torch

from tristream.algos import dpo_loss


def _inputs():
    # r_c = 0.5 * ([-1, -2] - [-2, -2]) = [0.5, 0];  r_r = 0.5 * ([-3, -1] - [-2, -2]) = [-0.5, 0.5];  h = [1, -0.5]
    return (torch.tensor([-1.0, -2.0], requires_grad=True), torch.tensor([-3.0, -1.0], requires_grad=True),
            torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -2.0]))


def test_dpo_loss_by_hand():
    c, r, rc, rr = _inputs()
    loss, d = dpo_loss(c, r, rc, rr, beta=0.5)
    softplus = lambda x: math.log1p(math.exp(x))  # -log sigmoid(h) = softplus(-h)  # noqa: E731
    assert loss.item() == pytest.approx((softplus(-1.0) + softplus(0.5)) / 2, abs=1e-6)  # 0.6436695
    assert loss.item() == pytest.approx(0.6436695, abs=1e-6)
    assert d["reward_margin"].item() == pytest.approx(0.25)
    assert d["reward_accuracy"].item() == 0.5
    assert d["reward_chosen"].item() == pytest.approx(0.25) and d["reward_rejected"].item() == pytest.approx(0.0)
    assert d["chosen_logp"].item() == -1.5 and d["rejected_logp"].item() == -2.0
    loss.backward()
    # dL/dc_b = -(beta / B) sigmoid(-h_b); dL/dr_b = +(beta / B) sigmoid(-h_b)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert c.grad.tolist() == pytest.approx([-0.25 * sig(-1.0), -0.25 * sig(0.5)], abs=1e-6)
    assert r.grad.tolist() == pytest.approx([0.25 * sig(-1.0), 0.25 * sig(0.5)], abs=1e-6)


def test_label_smoothing_by_hand():
    c, r, rc, rr = _inputs()
    loss, _ = dpo_loss(c, r, rc, rr, beta=0.5, label_smoothing=0.1)
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expect = sum(0.9 * softplus(-h) + 0.1 * softplus(h) for h in (1.0, -0.5)) / 2
    assert loss.item() == pytest.approx(expect, abs=1e-6) and expect == pytest.approx(0.6686695, abs=1e-6)


def test_no_gradient_reaches_the_reference_and_bad_settings_fail():
    c, r, _, _ = _inputs()
    rc, rr = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    dpo_loss(c, r, rc, rr)[0].backward()
    assert rc.grad is None and rr.grad is None
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(c, r, rc, rr, beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(c, r, rc, rr, label_smoothing=0.5)
