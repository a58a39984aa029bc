"""Tests of the pure-numpy ToyEnv (no MuJoCo, no OpenGL)."""
from __future__ import annotations

import numpy as np
import pytest

from tristream.envs import ToyEnv, make_env
from tristream.envs.throughput import env_only_throughput
from tristream.envs.toy import TOY_COLOURS


def test_spec_and_obs():
    env = make_env("toy", image_size=16, action_dim=4, cameras=("top", "top2"))
    assert env.spec.action_dim == 4 and env.spec.state_dim == 2 and env.spec.num_cameras == 2
    obs = env.reset(0)
    assert obs["images"].shape == (2, 16, 16, 3) and obs["images"].dtype == np.uint8
    assert obs["state"].shape == (2,) and obs["state"].dtype == np.float32
    assert obs["instruction"].startswith("go to the ") and obs["instruction"].endswith(" target")
    assert env.expert_action().shape == (4,)


def test_instruction_colour_is_drawn_and_right_way_up():
    env = ToyEnv(image_size=32)
    obs = env.reset(3)
    colour = obs["instruction"].split()[3]
    goal = env._targets[env._goal]
    r, c = env._pixel(goal)
    assert tuple(obs["images"][0, r, c]) == TOY_COLOURS[colour]
    # y = +1 is row 0: a target in the upper half of the square is drawn in the upper half of the image
    assert (r < 16) == (goal[1] > 0)


def test_determinism_and_seeds():
    actions = np.random.default_rng(1).uniform(-1, 1, (10, 2))
    a, b = ToyEnv(), ToyEnv()

    def roll(env, seed):
        out = [env.reset(seed)]
        out += [env.step(x) for x in actions]
        return out

    ra, rb = roll(a, 9), roll(b, 9)
    assert np.array_equal(ra[0]["images"], rb[0]["images"])
    for x, y in zip(ra[1:], rb[1:]):
        assert np.array_equal(x[0]["images"], y[0]["images"]) and np.array_equal(x[0]["state"], y[0]["state"])
        assert x[1:4] == y[1:4]
    assert not np.array_equal(a.reset(1)["images"], a.reset(2)["images"])


def test_expert_success_and_noop_truncation():
    env = ToyEnv()
    wins = 0
    for seed in range(50):
        env.reset(seed)
        for _ in range(env.spec.max_episode_steps):
            _, r, term, trunc, info = env.step(env.expert_action())
            if term or trunc:
                break
        wins += info["success"] and r == 1.0 and term
    assert wins == 50
    env.reset(0)
    for t in range(env.spec.max_episode_steps):
        _, r, term, trunc, info = env.step(np.zeros(2))
        assert not term and r == 0.0 and not info["success"] and info["task"] == "goto"
    assert trunc


def test_env_only_throughput_counts_every_env_step():
    """Speed itself is measured by `tristream bench env`, not asserted here."""
    out = env_only_throughput("toy", num_envs=2, steps=500)
    assert out["steps"] == 1000 and out["num_envs"] == 2
    assert out["env_steps_per_s"] == pytest.approx(out["steps"] / out["seconds"])
    assert out["step_ms"]["n"] == 1000 and out["reset_ms"]["n"] == out["episodes"]
    assert out["step_ms"]["median"] <= out["step_ms"]["p90"] <= out["step_ms"]["p99"] <= out["step_ms"]["max"]


def test_time_stats_against_hand_computed():
    from tristream.envs.throughput import time_stats
    assert time_stats([]) == {"n": 0}
    t = time_stats([0.001, 0.002, 0.004])  # log-durations ln1, ln2, ln4 (ms): std = ln2 * sqrt(2/3)
    assert t["n"] == 3 and t["median"] == pytest.approx(2.0) and t["max"] == pytest.approx(4.0)
    assert t["log_sigma"] == pytest.approx(np.log(2) * np.sqrt(2 / 3))
