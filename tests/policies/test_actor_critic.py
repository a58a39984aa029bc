"""The plain actor-critic policies (mlp, cnn): shapes, exact log-probs, initialisation, normalisation, errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tristream.envs.base import EnvSpec
from tristream.noise import RowNoise
from tristream.policies import load_policy, make_policy, save_policy

STATE = EnvSpec(action_dim=3, state_dim=11, camera_names=(), image_size=64, max_episode_steps=50)
PIXELS = EnvSpec(action_dim=2, state_dim=0, camera_names=("top",), image_size=64, max_episode_steps=50)


def _obs(spec: EnvSpec, b: int, seed: int = 0) -> dict:
    g = np.random.default_rng(seed)
    return {"images": g.integers(0, 256, (b, spec.num_cameras, spec.image_size, spec.image_size, 3), dtype=np.uint8),
            "state": g.normal(size=(b, spec.state_dim)).astype(np.float32) * 5 + 3,
            "instruction": ["reach"] * b}


@pytest.mark.parametrize("name,spec", [("mlp", STATE), ("cnn", PIXELS)])
def test_act_and_evaluate_agree(name, spec):
    torch.manual_seed(0)
    policy = make_policy(name, spec, chunk_len=2).eval()
    obs = _obs(spec, 5)
    out = policy.act(obs)
    assert out.actions.shape == (5, 2, spec.action_dim) and out.logp.shape == (5, 1) and out.value.shape == (5,)
    ev = policy.evaluate(obs, out.actions)
    torch.testing.assert_close(ev.logp, out.logp)
    torch.testing.assert_close(ev.value, out.value)
    torch.testing.assert_close(policy.value(obs), out.value)


def test_orthogonal_init_matches_cleanrl():
    """Hidden layers orthogonal with gain sqrt(2), the action mean with gain 0.01, the value output with gain 1."""
    policy = make_policy("mlp", STATE, hidden_dim=64, init_log_std=0.0)
    w = policy.actor[0].weight  # [64, 11]: orthonormal columns times sqrt(2)
    torch.testing.assert_close(w.T @ w, 2.0 * torch.eye(11), atol=1e-5, rtol=0)
    mean_w = policy.head.mean.weight  # [3, 64]: orthonormal rows times 0.01
    torch.testing.assert_close(mean_w @ mean_w.T, 1e-4 * torch.eye(3), atol=1e-8, rtol=0)
    assert abs(float(policy.value_out.weight.detach().norm()) - 1.0) < 1e-5
    torch.testing.assert_close(policy.head.log_std(), torch.zeros(3), atol=1e-6, rtol=0)
    off = make_policy("mlp", STATE, ortho_init=False)
    assert not torch.allclose(off.actor[0].weight.T @ off.actor[0].weight, 2.0 * torch.eye(11), atol=1e-2)


def test_state_normalisation_moves_only_when_observing():
    policy = make_policy("mlp", STATE).train()
    obs = _obs(STATE, 256)
    before = policy.evaluate(obs, torch.zeros(256, 1, 3)).value
    assert float(policy.norm.count) == 0  # a forward pass, even in train mode, leaves the statistics alone
    policy.observe(obs)
    assert not torch.allclose(policy.evaluate(obs, torch.zeros(256, 1, 3)).value, before)
    np.testing.assert_allclose(policy.norm.mean.numpy(), obs["state"].mean(0), rtol=1e-5, atol=1e-5)
    assert make_policy("mlp", STATE, normalize_state=False).norm.__class__.__name__ == "Identity"


def test_row_noise_makes_a_sample_independent_of_its_batch():
    policy = make_policy("mlp", STATE).eval()
    obs = _obs(STATE, 4)
    keys = np.arange(4, dtype=np.uint64) + 7
    whole = policy.act(obs, noise=RowNoise(keys)).actions
    alone = policy.act({k: v[2:3] for k, v in obs.items()}, noise=RowNoise(keys[2:3])).actions
    torch.testing.assert_close(whole[2:3], alone)


def test_cnn_uses_the_state_beside_the_images_and_ignores_the_instruction():
    spec = EnvSpec(action_dim=2, state_dim=4, camera_names=("a", "b"), image_size=48, max_episode_steps=10)
    policy = make_policy("cnn", spec, hidden_dim=32).eval()
    obs = _obs(spec, 3)
    v = policy.value(obs)
    obs2 = dict(obs, state=obs["state"] + 1.0)
    assert not torch.allclose(policy.value(obs2), v)
    torch.testing.assert_close(policy.value(dict(obs, instruction=["other"] * 3)), v)


def test_save_and_load_round_trip(tmp_path):
    policy = make_policy("cnn", PIXELS, hidden_dim=32, conv_channels=[8, 16, 16]).eval()
    save_policy(policy, tmp_path / "p")
    loaded = load_policy(tmp_path / "p").eval()
    obs = _obs(PIXELS, 2)
    torch.testing.assert_close(loaded.value(obs), policy.value(obs))
    assert loaded.config.conv_channels == (8, 16, 16)


@pytest.mark.parametrize("name,spec,kwargs,match", [
    ("mlp", PIXELS, {}, "has none .pixels only.; use policy.name=cnn"),
    ("cnn", STATE, {}, "this env has none; use policy.name=mlp"),
    ("mlp", STATE, {"head": "discrete"}, "Gaussian head only"),
    ("mlp", STATE, {"activation": "swish"}, "activation must be one of"),
    ("mlp", STATE, {"widths": 3}, r"unknown mlp / cnn policy setting\(s\) \['widths'\]"),
    ("cnn", EnvSpec(2, 0, ("a",), 8, 10), {}, "leaves nothing of a 8x8 image"),
    ("mlp", STATE, {"init_log_std": 3.0}, "min_log_std < init_log_std < max_log_std"),
])
def test_bad_settings_are_named(name, spec, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_policy(name, spec, **kwargs)


def test_entropy_is_the_gaussian_entropy():
    policy = make_policy("mlp", STATE, init_log_std=-0.5)
    ent = policy.evaluate(_obs(STATE, 2), torch.zeros(2, 1, 3)).entropy
    torch.testing.assert_close(ent, torch.full((2, 1), 3 * (0.5 + 0.5 * math.log(2 * math.pi) - 0.5)))


@pytest.mark.parametrize("squash", [False, True])
def test_mean_and_log_std_parameterisation(squash):
    """Default (SB3): mean = W h, unsquashed, and log std = its parameter; squash_mean / bound_log_std: tanh forms."""
    policy = make_policy("mlp", STATE, squash_mean=squash, bound_log_std=squash, init_log_std=-0.5).eval()
    with torch.no_grad():
        policy.head.mean.weight.zero_()
        policy.head.mean.bias.fill_(3.0)
    mode = policy.act(_obs(STATE, 2), deterministic=True).actions
    torch.testing.assert_close(mode, torch.full_like(mode, math.tanh(3.0) if squash else 3.0))
    torch.testing.assert_close(policy.head.log_std(), torch.full((3,), -0.5))
    param = float(policy.head.log_std_param.detach()[0])
    assert (param != -0.5) if squash else (param == -0.5)
