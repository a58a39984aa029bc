import pytest
import torch

from tristream.algos.advantages import gae, grpo_advantages

D = torch.float64


def test_gae_hand_example_termination_and_truncation():
    gamma, lam = 0.9, 0.8
    # three envs (columns): terminated at t=1; truncated at t=1; truncated at the last step
    rewards = torch.tensor([[1.0, 1.0, 0.0], [2.0, 1.0, 0.0], [3.0, 1.0, 0.0]], dtype=D)
    values = torch.tensor([[0.5, 1.0, 0.0], [1.0, 2.0, 0.0], [1.5, 3.0, 0.0]], dtype=D)
    terminated = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    truncated = torch.tensor([[0, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.bool)
    trunc_v = torch.tensor([[0.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 5.0]], dtype=D)
    last_value = torch.tensor([2.0, 4.0, 100.0], dtype=D)  # col 2's last_value is a reset obs: unused
    adv, ret = gae(rewards, values, terminated, truncated, last_value,
                   truncation_values=trunc_v, gamma=gamma, lam=lam)
    # col 0: d2 = 3 + .9*2 - 1.5 = 3.3; d1 = 2 - 1 = 1 (terminal); d0 = 1 + .9*1 - .5 = 1.4; A0 = 1.4 + .72*1
    # col 1: d2 = 1 + .9*4 - 3 = 1.6; d1 = 1 + .9*10 - 2 = 8 (bootstrap, trace cut); A0 = 1.8 + .72*8
    # col 2: d2 = .9*5 = 4.5; A1 = .72*4.5 = 3.24; A0 = .72*3.24
    expected = torch.tensor([[2.12, 7.56, 2.3328], [1.0, 8.0, 3.24], [3.3, 1.6, 4.5]], dtype=D)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(ret, expected + values, rtol=0, atol=1e-12)


def test_gae_lambda_one_is_discounted_return_minus_value():
    torch.manual_seed(0)
    r, v = torch.randn(5, 2, dtype=D), torch.randn(5, 2, dtype=D)
    z = torch.zeros(5, 2, dtype=torch.bool)
    last = torch.randn(2, dtype=D)
    adv, ret = gae(r, v, z, z, last, gamma=0.5, lam=1.0)
    g = last.clone()
    for t in range(4, -1, -1):
        g = r[t] + 0.5 * g
        torch.testing.assert_close(ret[t], g)


def test_gae_truncation_needs_values():
    z = torch.zeros(2, 1, dtype=torch.bool)
    with pytest.raises(ValueError, match="truncation_values"):
        gae(torch.zeros(2, 1), torch.zeros(2, 1), z, torch.ones(2, 1, dtype=torch.bool), torch.zeros(1))


def test_grpo_advantages_by_hand():
    R = torch.tensor([1.0, 0.0, 1.0, 0.5, 0.5, 2.0], dtype=D)
    gid = torch.tensor([7, 7, 7, 3, 3, 9])
    adv = grpo_advantages(R, gid, eps=0.0)
    std = (2.0 / 3.0 / 2.0) ** 0.5  # unbiased std of (1, 0, 1)
    expected = torch.tensor([1 / 3 / std, -2 / 3 / std, 1 / 3 / std, 0.0, 0.0, 0.0], dtype=D)
    torch.testing.assert_close(adv, expected)
    adv_nostd = grpo_advantages(R, gid, normalize_std=False)
    torch.testing.assert_close(adv_nostd, torch.tensor([1 / 3, -2 / 3, 1 / 3, 0, 0, 0], dtype=D))


def test_grpo_equal_returns_give_zero_even_with_rounding():
    R = torch.full((3,), 0.1, dtype=torch.float32) * 3
    assert torch.all(grpo_advantages(R, torch.zeros(3, dtype=torch.long)) == 0)
