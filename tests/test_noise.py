"""Per-row sampling noise: deterministic per key, blind to the rest of the batch, correctly distributed."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tristream.noise import RowNoise, sample_categorical


def test_a_rows_noise_depends_only_on_its_key():
    alone = RowNoise([42]).normal(2, 3)
    batch = RowNoise([7, 42, 9]).normal(2, 3)
    torch.testing.assert_close(batch[1], alone[0], rtol=0, atol=0)
    assert not torch.equal(batch[0], batch[2])


def test_successive_draws_continue_each_stream():
    a = RowNoise([1, 2])
    first, second = a.uniform(4), a.uniform(4)
    assert not torch.equal(first, second)
    both = RowNoise([1, 2]).uniform(8)
    torch.testing.assert_close(torch.cat([first, second], 1), both, rtol=0, atol=0)


def test_normal_and_uniform_are_distributed_as_named():
    z = RowNoise(range(2000)).normal(50).double()
    u = RowNoise(range(2000, 4000)).uniform(50).double()
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01  # 100k draws: 5 sigma ~ 0.016 / 0.011
    assert ((z.abs() < 1).double().mean() - 0.6827).abs() < 0.005
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0 and abs(u.mean() - 0.5) < 0.005
    per_key = RowNoise(range(500)).normal(1)[:, 0].double()  # first draws across keys: no key structure
    assert abs(per_key.mean()) < 0.2 and abs(per_key.std() - 1) < 0.15


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6).filter(lambda p: sum(p) > 0.1))
def test_sample_categorical_draws_each_index_with_its_probability(p):
    probs = torch.tensor(p, dtype=torch.float32)
    u = (torch.arange(20_000, dtype=torch.float64) + 0.5) / 20_000  # a uniform grid: exact frequencies
    idx = sample_categorical(probs.expand(len(u), -1), u.float())
    freq = torch.bincount(idx, minlength=len(p)).double() / len(u)
    assert torch.allclose(freq, probs.double() / probs.double().sum(), atol=2e-4)
    assert (freq[probs == 0] == 0).all()  # a zero-probability index is never drawn


def test_sample_categorical_refuses_rows_without_probability_mass():
    for bad in (torch.zeros(1, 3), torch.tensor([[0.2, float("nan"), 0.3]])):
        with pytest.raises(ValueError, match="finite and non-negative with a positive sum"):
            sample_categorical(bad, torch.tensor([0.5]))


def test_uniform_noise_never_reaches_one():
    u = RowNoise(range(20_000)).uniform(50)
    assert u.dtype == torch.float32 and float(u.min()) >= 0.0 and float(u.max()) < 1.0


def test_sample_categorical_stays_in_range_at_the_edges():
    probs = torch.tensor([[0.0, 0.3, 0.7, 0.0]])
    assert sample_categorical(probs, torch.tensor([0.0])).item() == 1
    assert sample_categorical(probs, torch.tensor([1.0 - 1e-9])).item() == 2


@pytest.mark.parametrize("head", ["gaussian", "discrete"])
def test_a_policys_sample_ignores_the_rest_of_its_batch(tiny, head):
    from tristream.envs import make_env
    from tristream.policies.from_config import build_policy
    from tristream.types import ObsBatch
    env = make_env("toy", image_size=16)
    torch.manual_seed(0)
    policy = build_policy(tiny(f"policy.head={head}"), env.spec)
    obs = ObsBatch.stack([env.reset(seed=s) for s in range(5)]).as_dict()
    one = ObsBatch.stack([env.reset(seed=3)]).as_dict()
    batch = policy.act(obs, noise=RowNoise([10, 11, 12, 13, 14]))
    alone = policy.act(one, noise=RowNoise([13]))
    torch.testing.assert_close(batch.actions[3:4], alone.actions, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch.logp[3:4], alone.logp, rtol=1e-5, atol=1e-5)
    again = policy.act(obs, noise=RowNoise([10, 11, 12, 13, 14]))
    torch.testing.assert_close(batch.actions, again.actions, rtol=0, atol=0)
    assert np.unique(batch.actions.detach().numpy().round(5), axis=0).shape[0] == 5  # different keys, different samples
