"""Action heads: exact log-probs, entropies, modes, binning and masked BC losses."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tristream.policies.vla.heads import DiscreteTokenHead, GaussianChunkHead

pytestmark = pytest.mark.kernels  # trains or compares float results: `make test` reruns it on other CPU kernels

B, D, K, A = 5, 12, 3, 2


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_gaussian_logp_and_entropy_match_torch_normal():
    head = GaussianChunkHead(D, K, A, init_log_std=-0.7)
    h = torch.randn(B, D)
    actions = torch.randn(B, K, A) * 0.8
    logp, ent = head.evaluate(h, actions)
    assert logp.shape == (B, 1) and ent.shape == (B, 1) and head.tokens_per_chunk == 1
    mean, log_std = head.dist_params(h)
    dist = torch.distributions.Normal(mean, log_std.exp())
    torch.testing.assert_close(logp, dist.log_prob(actions).sum(dim=(1, 2)).unsqueeze(-1))
    torch.testing.assert_close(ent, dist.entropy().sum(dim=(1, 2)).unsqueeze(-1))
    # hand check of one element
    m, s, a = mean[0, 0, 0].item(), log_std[0, 0, 0].exp().item(), actions[0, 0, 0].item()
    hand = -0.5 * ((a - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
    assert abs(head._log_prob(actions, mean, log_std)[0, 0, 0].item() - hand) < 1e-5


def test_gaussian_sample_logp_equals_evaluate_and_mode_is_mean():
    head = GaussianChunkHead(D, K, A)
    h = torch.randn(B, D)
    actions, logp = head.sample(h)
    torch.testing.assert_close(logp, head.evaluate(h, actions)[0])
    det, _ = head.sample(h, deterministic=True)
    torch.testing.assert_close(det, head.mode(h))
    assert det.abs().max() < 1.0  # tanh-squashed mean


def test_gaussian_dim_tokens_split_the_chunk_density():
    chunk, per_dim = GaussianChunkHead(D, K, A), GaussianChunkHead(D, K, A, tokens="dim")
    per_dim.load_state_dict(chunk.state_dict())  # no weight depends on the token split
    h, actions = torch.randn(B, D), torch.randn(B, K, A)
    logp, ent = per_dim.evaluate(h, actions)
    assert logp.shape == ent.shape == (B, K * A) and per_dim.tokens_per_chunk == K * A
    torch.testing.assert_close(logp.sum(-1, keepdim=True), chunk.evaluate(h, actions)[0])
    torch.testing.assert_close(ent.sum(-1, keepdim=True), chunk.evaluate(h, actions)[1])
    # (k, a) order, like the discrete head's tokens
    mean, log_std = per_dim.dist_params(h)
    torch.testing.assert_close(logp.view(B, K, A), per_dim._log_prob(actions, mean, log_std))
    sampled, slogp = per_dim.sample(h)
    torch.testing.assert_close(slogp, per_dim.evaluate(h, sampled)[0])
    with pytest.raises(ValueError, match="'chunk', 'dim'"):
        per_dim.set_tokens("step")


def test_gaussian_log_std_init_and_bounds():
    head = GaussianChunkHead(D, K, A, init_log_std=-1.0, min_log_std=-4.0, max_log_std=0.5)
    torch.testing.assert_close(head.log_std(), torch.full((A,), -1.0))
    with torch.no_grad():
        head.log_std_param.fill_(1e3)
    assert head.log_std().max() <= 0.5
    head.set_log_std(-2.0)
    torch.testing.assert_close(head.log_std(), torch.full((A,), -2.0))
    with pytest.raises(ValueError):
        head.set_log_std(1.0)


@pytest.mark.parametrize("head_cls", [GaussianChunkHead, DiscreteTokenHead])
def test_bc_loss_ignores_masked_steps(head_cls):
    head = head_cls(D, K, A)
    h = torch.randn(B, D)
    actions = torch.rand(B, K, A) * 2 - 1
    mask = torch.ones(B, K, dtype=torch.bool)
    mask[:, -1] = False
    other = actions.clone()
    other[:, -1] = -actions[:, -1]
    torch.testing.assert_close(head.bc_loss(h, actions, mask), head.bc_loss(h, other, mask))
    assert not torch.allclose(head.bc_loss(h, actions), head.bc_loss(h, other))
    with pytest.raises(ValueError):
        head.bc_loss(h, actions, mask[:, :1])


def test_discrete_logp_is_log_softmax_gathered():
    head = DiscreteTokenHead(D, K, A, n_bins=256)
    h = torch.randn(B, D)
    actions, logp = head.sample(h)
    assert head.tokens_per_chunk == K * A and logp.shape == (B, K * A) and actions.shape == (B, K, A)
    logits = head.logits(h)
    assert logits.shape == (B, K * A, 256)
    bins = head.actions_to_bins(actions).reshape(B, K * A)
    expected = torch.log_softmax(logits, -1).gather(-1, bins.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logp, expected)
    ev_logp, ent = head.evaluate(h, actions)
    torch.testing.assert_close(ev_logp, expected)
    torch.testing.assert_close(ent, torch.distributions.Categorical(logits=logits).entropy())
    # token order is (k, a): token k*A + a belongs to actions[:, k, a]
    assert torch.equal(bins.view(B, K, A), head.actions_to_bins(actions))


def test_discrete_deterministic_is_argmax_centre():
    head = DiscreteTokenHead(D, K, A)
    h = torch.randn(B, D)
    det, _ = head.sample(h, deterministic=True)
    torch.testing.assert_close(det, head.centres[head.logits(h).argmax(-1)].view(B, K, A))
    torch.testing.assert_close(det, head.mode(h))


def test_bin_centre_round_trip_is_exact():
    head = DiscreteTokenHead(D, K, A, n_bins=256)
    idx = torch.arange(256)
    centres = head.bins_to_actions(idx)
    assert torch.equal(head.actions_to_bins(centres), idx)
    assert torch.equal(head.bins_to_actions(head.actions_to_bins(centres)), centres)
    assert centres[0].item() == -1 + 1 / 256 and centres[-1].item() == 1 - 1 / 256
    assert head.actions_to_bins(torch.tensor([-5.0, -1.0, 1.0, 5.0])).tolist() == [0, 0, 255, 255]


@settings(max_examples=200, deadline=None)
@given(st.floats(-1.0, 1.0, allow_nan=False))
def test_binning_picks_nearest_centre(a):
    head = _HEAD
    x = torch.tensor([a], dtype=torch.float32)
    centre = head.bins_to_actions(head.actions_to_bins(x))
    dists = (head.centres - x).abs()
    assert (centre - x).abs().item() <= dists.min().item() + 1e-6


_HEAD = DiscreteTokenHead(D, K, A)
