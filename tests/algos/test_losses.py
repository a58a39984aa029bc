import math

import pytest
import torch

from tristream.algos import (LOSSES, compute_policy_loss, decoupled_ppo_loss, get_loss, grpo_loss,
                             gspo_loss, ppo_clip_loss, reduce_loss, value_loss)

D = torch.float64


# ---------------------------------------------------------------- reductions

def test_reductions_by_hand():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], dtype=D)
    loss[0, 2] = float("nan")  # masked garbage must not leak
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    assert reduce_loss(loss, mask, "token-mean").item() == pytest.approx(7 / 3)
    assert reduce_loss(loss, mask, "seq-mean-token-mean").item() == pytest.approx((1.5 + 4) / 2)
    assert reduce_loss(loss, mask, "seq-mean-token-sum").item() == pytest.approx((3 + 4) / 2)
    assert reduce_loss(loss, mask, "seq-mean-token-sum-norm").item() == pytest.approx((3 / 3 + 4 / 3) / 2)
    assert reduce_loss(loss, mask, "seq-mean-token-sum-norm", norm_len=10).item() == pytest.approx(0.35)
    assert reduce_loss(loss, mask, "token-mean", num_global_tokens=7).item() == pytest.approx(1.0)
    assert reduce_loss(loss, mask, "seq-mean-token-mean", num_global_seqs=11).item() == pytest.approx(5.5 / 11)
    with pytest.raises(ValueError, match="token-mean"):
        reduce_loss(loss, mask, "mean")


# ---------------------------------------------------------------- PPO

def test_ppo_clip_by_hand():
    ratio = torch.tensor([[1.5, 0.5, 1.1, 0.7]], dtype=D)
    old = torch.zeros(1, 4, dtype=D)
    logp = ratio.log().requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0, -1.0, -2.0]], dtype=D)
    mask = torch.ones(1, 4, dtype=torch.bool)
    loss, diag = ppo_clip_loss(logp, old, adv, mask, clip_eps=0.2)
    # per token: max(-A r, -A clip r) = -1.2 (clipped), -0.5, 1.1, 1.6 (clipped)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.1 + 1.6) / 4)
    assert diag["clip_frac"].item() == pytest.approx(0.5)
    assert diag["ratio_mean"].item() == pytest.approx(3.8 / 4)
    loss.backward()
    # d/dlogp of -A r = -A r for unclipped tokens, 0 for clipped ones
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.5, 1.1, 0.0]], dtype=D) / 4)


def test_ppo_dual_clip_by_hand():
    logp = torch.tensor([[math.log(5.0), math.log(5.0)]], dtype=D, requires_grad=True)
    adv = torch.tensor([[-1.0, 1.0]], dtype=D)
    old, mask = torch.zeros(1, 2, dtype=D), torch.ones(1, 2, dtype=torch.bool)
    loss, _ = ppo_clip_loss(logp, old, adv, mask, clip_eps=0.2, loss_reduction="seq-mean-token-sum")
    assert loss.item() == pytest.approx(5.0 - 1.2)  # A<0 unbounded: -A r = 5; A>0 clipped at -1.2
    loss, diag = ppo_clip_loss(logp, old, adv, mask, clip_eps=0.2, dual_clip=3.0,
                               loss_reduction="seq-mean-token-sum")
    assert loss.item() == pytest.approx(3.0 - 1.2)  # capped at dual_clip * |A| = 3
    assert diag["dual_clip_frac"].item() == pytest.approx(0.5)
    loss.backward()
    assert torch.all(logp.grad == 0)
    with pytest.raises(ValueError):
        ppo_clip_loss(logp, old, adv, mask, dual_clip=0.9)


def test_decoupled_reduces_to_ppo_and_weights():
    torch.manual_seed(0)
    B, L = 4, 5
    logp = (0.3 * torch.randn(B, L, dtype=D)).requires_grad_(True)
    prox = 0.3 * torch.randn(B, L, dtype=D)
    adv = torch.randn(B, dtype=D)
    mask = torch.rand(B, L) > 0.2
    l1, d1 = ppo_clip_loss(logp, prox, adv, mask, 0.2, 3.0)
    g1, = torch.autograd.grad(l1, logp)
    l2, d2 = decoupled_ppo_loss(logp, prox, prox.clone(), adv, mask, 0.2, dual_clip=3.0)
    g2, = torch.autograd.grad(l2, logp)
    torch.testing.assert_close(l1, l2, rtol=0, atol=0)
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)
    # importance weight = exp(prox - behaviour), detached; AReaL cap drops tokens above it
    beh = prox - torch.log(torch.tensor(2.0, dtype=D))  # w = 2 everywhere
    l3, d3 = decoupled_ppo_loss(logp, prox, beh, adv, mask, 0.2, dual_clip=3.0)
    torch.testing.assert_close(l3, 2 * l1)
    l4, d4 = decoupled_ppo_loss(logp, prox, beh, adv, mask, 0.2, behaviour_weight_cap=1.5)
    assert l4.item() == 0.0 and d4["behaviour_capped_frac"].item() == 1.0
    l5, _ = decoupled_ppo_loss(logp, prox, beh, adv, mask, 0.2, dual_clip=3.0, behaviour_weight_cap=1.5,
                               behaviour_cap_mode="truncate")
    torch.testing.assert_close(l5, 1.5 * l1)


def test_grpo_is_ppo_plus_optional_kl():
    torch.manual_seed(1)
    logp = (0.2 * torch.randn(3, 4, dtype=D)).requires_grad_(True)
    old, ref = 0.2 * torch.randn(3, 4, dtype=D), 0.2 * torch.randn(3, 4, dtype=D)
    adv, mask = torch.randn(3, dtype=D), torch.ones(3, 4, dtype=torch.bool)
    l_ppo, _ = ppo_clip_loss(logp, old, adv, mask, loss_reduction="seq-mean-token-mean")
    l_grpo, _ = grpo_loss(logp, old, adv, mask, ref_logp=ref)  # kl off by default
    torch.testing.assert_close(l_ppo, l_grpo)
    l_kl, diag = grpo_loss(logp, old, adv, mask, ref_logp=ref, kl_coef=0.1)
    d = ref - logp.detach()
    k3 = (d.exp() - d - 1).mean()
    torch.testing.assert_close(l_kl, l_ppo + 0.1 * k3)
    assert diag["kl_ref"].item() == pytest.approx(k3.item())
    with pytest.raises(ValueError):
        grpo_loss(logp, old, adv, mask, kl_coef=0.1)


# ---------------------------------------------------------------- GSPO

def test_gspo_by_hand():
    old = torch.zeros(2, 3, dtype=D)
    logp = torch.tensor([[1e-4, 3e-4, 0.0], [1e-3, 1e-3, 0.5]], dtype=D, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, 1.0], dtype=D)
    loss, diag = gspo_loss(logp, old, adv, mask)
    s0 = math.exp(2e-4)  # inside (1 - 3e-4, 1 + 4e-4); s1 = exp(1e-3) is clipped to 1 + 4e-4
    assert loss.item() == pytest.approx((-s0 - (1 + 4e-4)) / 2, abs=1e-15)
    assert diag["clip_frac"].item() == pytest.approx(0.5)
    loss.backward()
    expected = torch.tensor([[-s0 / 4, -s0 / 4, 0.0], [0.0, 0.0, 0.0]], dtype=D)
    torch.testing.assert_close(logp.grad, expected)


def test_gspo_token_gradient_equals_sequence_objective():
    torch.manual_seed(2)
    B, L = 5, 6
    old = 0.01 * torch.randn(B, L, dtype=D)
    logp = (old + 3e-4 * torch.randn(B, L, dtype=D)).requires_grad_(True)
    mask = torch.rand(B, L) > 0.3
    mask[:, 0] = True
    adv = torch.randn(B, dtype=D)
    loss, _ = gspo_loss(logp, old, adv, mask)
    g_tok, = torch.autograd.grad(loss, logp)
    m = mask.to(D)
    s = (((logp - old) * m).sum(-1) / m.sum(-1)).exp()
    seq_obj = torch.minimum(s * adv, s.clamp(1 - 3e-4, 1 + 4e-4) * adv).mean()
    g_seq, = torch.autograd.grad(-seq_obj, logp)
    torch.testing.assert_close(loss, -seq_obj)
    torch.testing.assert_close(g_tok, g_seq)


# ---------------------------------------------------------------- value loss, registry

def test_value_loss_by_hand():
    v = torch.tensor([1.0, 3.0], dtype=D)
    R = torch.tensor([2.0, 0.0], dtype=D)
    old = torch.tensor([1.5, 2.0], dtype=D)
    loss, _ = value_loss(v, R)
    assert loss.item() == pytest.approx(0.5 * (1 + 9) / 2)
    loss, diag = value_loss(v, R, old, clip=0.2)
    # v0 clipped to 1.3 -> (0.7)^2 = .49 < 1; v1 clipped to 2.2 -> 4.84 < 9: unclipped losses win
    assert loss.item() == pytest.approx(0.5 * (1 + 9) / 2) and diag["value_clip_frac"].item() == 0
    loss, _ = value_loss(torch.tensor([2.1, 3.0], dtype=D), R, torch.tensor([2.5, 2.0], dtype=D), clip=0.2)
    # v0: (0.1)^2 = .01 vs clipped 2.3 -> .09 (clip wins); v1: 9 vs 4.84
    assert loss.item() == pytest.approx(0.5 * (0.09 + 9) / 2)


def test_registry():
    assert set(LOSSES) == {"ppo", "decoupled_ppo", "grpo", "gspo", "fiberpo", "fiberpo_domain"}
    with pytest.raises(ValueError, match="fiberpo_domain"):
        get_loss("trpo")
    torch.manual_seed(3)
    logp = (0.05 * torch.randn(4, 3, dtype=D)).requires_grad_(True)
    kw = dict(logp=logp, old_logp=torch.zeros(4, 3, dtype=D), advantages=torch.randn(4, dtype=D),
              mask=torch.ones(4, 3, dtype=torch.bool), loss_reduction="token-mean",
              group_ids=torch.tensor([0, 0, 1, 1]), domain_ids=torch.tensor([0, 0, 0, 0]))
    for name in LOSSES:
        loss, diag = compute_policy_loss(name, **kw)
        assert loss.dim() == 0 and torch.isfinite(loss)
        assert all(torch.is_tensor(v) and v.dim() == 0 for v in diag.values())
    l_ppo, _ = compute_policy_loss("ppo", **kw, clip_eps=0.1)
    l_dec, _ = compute_policy_loss("decoupled_ppo", **kw, clip_eps=0.1)
    torch.testing.assert_close(l_ppo, l_dec)
    with pytest.raises(TypeError):
        compute_policy_loss("ppo", **kw, not_a_knob=1)
