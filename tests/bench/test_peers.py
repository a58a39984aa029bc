"""bench peers: the settings both sides get, what it refuses to compare, and a clear error when a peer cannot be
installed (the side-by-side runs themselves are the benchmark, not a test)."""
from __future__ import annotations

import json

import pytest

from tristream.bench.peers import Peer, PeerInstallError, _binned, check_comparable, peer_python, plot_peers, \
    sb3_settings
from tristream.config import Config, load_config


def _cfg(*overrides):
    return load_config(Config, "ppo_mujoco", list(overrides))


def test_sb3_gets_the_same_ppo_settings():
    cfg = _cfg("algo.lr=1e-4", "algo.clip_eps=0.1", "policy.hidden_dim=256", "policy.kwargs.activation=relu",
               "policy.init_log_std=-2", "rollout.num_envs=4", "rollout.steps_per_env=128")
    s = sb3_settings(cfg, seed=3, total_steps=5000)
    assert s["env_id"] == "Hopper-v5" and s["seed"] == 3 and s["total_steps"] == 5000 and s["n_envs"] == 4
    assert s["ppo"] == {"learning_rate": 1e-4, "n_steps": 128, "batch_size": 64, "n_epochs": 10, "gamma": 0.99,
                        "gae_lambda": 0.95, "clip_range": 0.1, "ent_coef": 0.0, "vf_coef": 0.5, "max_grad_norm": 0.5,
                        "normalize_advantage": True, "target_kl": None}
    assert s["policy_kwargs"] == {"net_arch": {"pi": [256, 256], "vf": [256, 256]}, "activation": "relu",
                                  "log_std_init": -2.0, "ortho_init": True}
    assert s["normalize_obs"] and s["normalize_reward"] and not s["linear_lr"]
    json.dumps(s)  # the peer script reads it as JSON


@pytest.mark.parametrize("override,named", [
    ("policy.name=vla", "policy.name=mlp"), ("policy.chunk_len=2", "policy.chunk_len=1"),
    ("rollout.steps_per_env=0", "rollout.steps_per_env=N"), ("algo.loss=gspo", "algo.loss=ppo"),
])
def test_refuses_settings_the_peer_cannot_share(override, named):
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        check_comparable(_cfg(override))


def test_a_peer_that_cannot_be_installed_is_a_clear_error(tmp_path):
    peer = Peer("nosuch", ("tristream-no-such-package==0.0.0",), "sb3_ppo.py", "tristream-no-such-package")
    with pytest.raises(PeerInstallError) as e:
        peer_python(peer, tmp_path, pip_args=("--no-index", "--find-links", str(tmp_path)))
    msg = str(e.value)
    assert "could not install peer 'nosuch'" in msg and "tristream-no-such-package" in msg and "rerun" in msg
    assert not (tmp_path / "nosuch" / ".installed").exists()  # the next run tries again


def test_curves_are_binned_by_env_steps_and_plotted(tmp_path):
    rows = [{"env_steps": s, "return": r} for s, r in [(10, 1.0), (20, 3.0), (60, 5.0), (100, 7.0)]]
    assert _binned(rows, total=100, bins=4) == [2.0, None, 5.0, 7.0]
    run = {"wall_s": 1.0, "curve": [], "final": 7.0, "episodes": [[s["env_steps"], 0.1 * i, s["return"]]
                                                                 for i, s in enumerate(rows)]}
    result = {"peer": "sb3", "peer_version": "x", "env_id": "Hopper-v5", "seeds": 1,
              "runs": {"sb3": [run], "tristream": [run]}}
    assert plot_peers(result, tmp_path / "p.png").stat().st_size > 1000
