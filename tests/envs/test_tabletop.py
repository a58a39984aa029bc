"""Tests of the MuJoCo tabletop suite (needs MUJOCO_GL=egl rendering; the whole file runs in a few seconds)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("mujoco")

from tristream.envs import env_names, make_env  # noqa: E402
from tristream.envs.tabletop import FAMILIES, PALETTE, TabletopEnv  # noqa: E402
from tristream.envs.tabletop import tasks as task_lib  # noqa: E402

FAMS = ("reach", "push", "pick", "place")


@pytest.fixture(scope="module")
def envs():
    made = {fam: TabletopEnv(task=fam) for fam in FAMS}
    made["mix"] = TabletopEnv()
    yield made
    for e in made.values():
        e.close()


def run_expert(env, seed, noise=0.0):
    obs = env.reset(seed)
    rewards, info, term, trunc = [], {}, False, False
    for _ in range(env.spec.max_episode_steps):
        obs, r, term, trunc, info = env.step(env.expert_action(noise))
        rewards.append(r)
        if term or trunc:
            break
    return obs, rewards, term, trunc, info


def test_families_and_registry():
    assert set(FAMS) <= set(FAMILIES)
    assert len(PALETTE) >= 5 and {"red", "green", "blue", "yellow", "purple"} <= set(PALETTE)
    names = env_names()
    for n in ("tabletop", "tabletop/reach", "tabletop/push", "tabletop/pick", "tabletop/place", "toy"):
        assert n in names
    env = make_env("tabletop/pick", image_size=32, max_episode_steps=7)
    assert env.spec.tasks == ("pick",) and env.spec.image_size == 32 and env.spec.max_episode_steps == 7
    assert env.reset(0)["images"].shape == (2, 32, 32, 3)
    env.close()


def test_import_envs_does_not_import_mujoco():
    code = "import sys, tristream.envs as e; e.make_env('toy').reset(0); assert 'mujoco' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_family_lists_valid_ones():
    with pytest.raises(ValueError) as ei:
        TabletopEnv(task="stack")
    for fam in FAMS:
        assert fam in str(ei.value)
    with pytest.raises(ValueError, match="reach"):
        make_env("tabletop", task="juggle")
    with pytest.raises(ValueError, match="place"):
        TabletopEnv(task="mix", tasks=("reach", "nope"))


def test_spec_and_observation(envs):
    env = envs["mix"]
    spec = env.spec
    assert spec.action_dim == 4 and spec.state_dim == 8
    assert spec.camera_names == ("agentview", "wrist") and spec.num_cameras == 2
    assert spec.tasks == tuple(FAMS) and spec.max_episode_steps == 50 and spec.image_size == 64
    obs = env.reset(5)
    assert obs["images"].shape == (2, 64, 64, 3) and obs["images"].dtype == np.uint8
    assert obs["state"].shape == (8,) and obs["state"].dtype == np.float32
    assert isinstance(obs["instruction"], str) and obs["instruction"]
    assert not np.array_equal(obs["images"][0], obs["images"][1])  # the two cameras see different things
    _, r, term, trunc, info = env.step(np.zeros(4, np.float32))
    assert isinstance(r, float) and set(info) >= {"success", "task"} and info["task"] == env.task


def test_one_camera_option():
    env = TabletopEnv(task="reach", cameras=("wrist",), image_size=48)
    assert env.reset(1)["images"].shape == (1, 48, 48, 3)
    env.close()


def test_right_way_up(envs):
    env = envs["reach"]
    img = env.reset(0)["images"][0].astype(float)  # agentview
    top, bottom = img[:6].mean(), img[-6:].mean()
    table = np.array([0.50, 0.45, 0.40]) * 255
    # the dark background is at the top, the table fills the bottom rows
    assert top < 40 < bottom
    assert np.abs(img[-3:].reshape(-1, 3).mean(0) - table).max() < 80


def test_determinism_under_seed(envs):
    env = envs["mix"]
    other = TabletopEnv()
    actions = np.random.default_rng(0).uniform(-1, 1, (12, 4)).astype(np.float32)
    for seed in (3, 11):
        runs = []
        for e in (env, other, env):
            obs = e.reset(seed)
            traj = [(obs["images"].copy(), obs["state"].copy(), 0.0, obs["instruction"])]
            for a in actions:
                obs, r, *_ = e.step(a)
                traj.append((obs["images"].copy(), obs["state"].copy(), r, obs["instruction"]))
            runs.append(traj)
        for traj in runs[1:]:
            for (i0, s0, r0, l0), (i1, s1, r1, l1) in zip(runs[0], traj):
                assert np.array_equal(i0, i1) and np.array_equal(s0, s1) and r0 == r1 and l0 == l1
    other.close()


def test_different_seeds_different_layouts(envs):
    env = envs["mix"]
    layouts, images, families = set(), [], set()
    for seed in range(12):
        obs = env.reset(seed)
        layouts.add(tuple(np.round(env.object_pos(0), 4)))
        images.append(obs["images"])
        families.add(env.task)
    assert len(layouts) == 12
    assert not np.array_equal(images[0], images[1])
    assert len(families) >= 3  # the mix draws the family from the seed


def test_mix_restricted_families():
    env = TabletopEnv(task="mix", tasks=("reach", "pick"), image_size=16)
    assert env.spec.tasks == ("reach", "pick")
    seen = {(env.reset(s), env.task)[1] for s in range(10)}
    assert seen == {"reach", "pick"}
    env.close()


@pytest.mark.parametrize("family", FAMS)
def test_instruction_mentions_target(envs, family):
    env = envs[family]
    for seed in range(5):
        obs = env.reset(seed)
        ep = env.episode
        assert ep.colours[ep.target] in obs["instruction"]
        if family == "push":
            assert ep.zone in obs["instruction"]
        if family == "place":
            assert ep.plate_colours[ep.plate] in obs["instruction"]
    templates = {env.reset(s)["instruction"].replace(env.episode.colours[env.episode.target], "{c}") for s in range(30)}
    assert len({t.split(" ")[0] for t in templates}) >= 2 or len(templates) >= 2  # varied phrasings


@pytest.mark.parametrize("family", FAMS)
def test_expert_reaches_success(envs, family):
    env = envs[family]
    obs, rewards, term, trunc, info = run_expert(env, seed=42)
    assert term and not trunc and info["success"] and info["task"] == family
    assert rewards[-1] == 1.0 and sum(rewards) == 1.0  # sparse: 1.0 once, on the first success step
    assert env.is_success()


@pytest.mark.parametrize("family", FAMS)
def test_noop_episode_truncates(envs, family):
    env = envs[family]
    env.reset(7)
    for t in range(50):
        _, r, term, trunc, info = env.step(np.array([0, 0, 0, -1], np.float32))
        assert r == 0.0 and not term and not info["success"]
        assert trunc == (t == 49)


@pytest.mark.parametrize("family", FAMS)
def test_expert_success_rate(envs, family):
    env = envs[family]
    n = 20
    wins = sum(run_expert(env, seed=1000 + s)[4]["success"] for s in range(n))
    assert wins >= 0.95 * n, f"{family}: expert solved {wins}/{n}"


def test_noisy_expert_still_mostly_succeeds(envs):
    env = envs["mix"]
    wins = sum(run_expert(env, seed=s, noise=0.1)[4]["success"] for s in range(12))
    assert wins >= 10


def test_actions_are_clipped(envs):
    env = envs["reach"]
    env.reset(1)
    s_big = env.step(np.array([50.0, -50.0, 50.0, 9.0]))[0]["state"]
    env.reset(1)
    s_one = env.step(np.array([1.0, -1.0, 1.0, 1.0]))[0]["state"]
    assert np.array_equal(s_big, s_one)
    env.reset(1)
    assert np.isfinite(env.step(np.array([np.nan, 0, 0, 0]))[0]["state"]).all()


def test_state_has_no_object_positions(envs):
    env = envs["pick"]
    s0 = env.reset(0)["state"]
    s1 = env.reset(1)["state"]
    # identical gripper start z, open fingers, open command; only the gripper's own xy may differ
    assert s0[2] == pytest.approx(s1[2]) and s0[6] == pytest.approx(1.0) and s0[7] == -1.0


def test_reward_shaping_is_potential_difference():
    env = TabletopEnv(task="pick", reward_shaping=True, image_size=16)
    env.reset(3)
    phi0 = task_lib.potential(env.episode, env.ee_pos(), env.object_pos())
    total, done = 0.0, False
    while not done:
        _, r, term, trunc, _ = env.step(env.expert_action())
        total += r
        done = term or trunc
    phi1 = task_lib.potential(env.episode, env.ee_pos(), env.object_pos())
    assert term and total == pytest.approx(1.0 + (phi1 - phi0), abs=1e-9)
    assert phi1 > phi0
    env.close()


def test_staged_place_potential_counts_the_missing_lift_until_over_the_plate():
    ep = task_lib.sample_episode(0, ("place",))
    ee, rest = np.r_[ep.obj_pos[ep.target][:2], 0.05], ep.obj_pos[ep.target].copy()
    plain = task_lib.potential(ep, ee, rest)
    # on the table away from the plate: the whole carry height is missing
    assert task_lib.potential(ep, ee, rest, staged_place=True) == pytest.approx(
        plain - (task_lib.PLACE_CARRY_Z - rest[2]))
    lifted = rest + np.r_[0.0, 0.0, 0.1]
    assert task_lib.potential(ep, ee, lifted, staged_place=True) == pytest.approx(task_lib.potential(ep, ee, lifted))
    on_plate = np.r_[ep.goal_xy(), rest[2]]  # over the plate the lift is no longer needed
    assert task_lib.potential(ep, ee, on_plate, staged_place=True) == pytest.approx(task_lib.potential(ep, ee, on_plate))
    other = task_lib.sample_episode(0, ("pick",))  # other families are unchanged
    assert task_lib.potential(other, ee, rest, staged_place=True) == task_lib.potential(other, ee, rest)
    env = TabletopEnv(task="place", reward_shaping=True, staged_place_shaping=True, image_size=16)
    env.reset(3)
    phi0 = task_lib.potential(env.episode, env.ee_pos(), env.object_pos(), staged_place=True)
    total, done = 0.0, False
    while not done:
        _, r, term, trunc, _ = env.step(env.expert_action())
        total, done = total + r, term or trunc
    phi1 = task_lib.potential(env.episode, env.ee_pos(), env.object_pos(), staged_place=True)
    assert term and total == pytest.approx(1.0 + (phi1 - phi0), abs=1e-9)
    env.close()


def test_max_episode_steps_truncation():
    env = TabletopEnv(task="place", max_episode_steps=3, image_size=16)
    env.reset(0)
    flags = [env.step(np.zeros(4))[3] for _ in range(3)]
    assert flags == [False, False, True]
    env.close()


def test_env_only_throughput_tabletop():
    from tristream.envs.throughput import env_only_throughput

    out = env_only_throughput("tabletop/reach", num_envs=2, steps=10, image_size=16, max_episode_steps=4)
    assert out["steps"] == 20 and out["num_envs"] == 2
    assert out["env_steps_per_s"] == pytest.approx(out["steps"] / out["seconds"])  # the rate is of what was timed


def test_headless_gl_defaults_keep_a_users_choice(monkeypatch):
    from tristream.envs.headless_gl import set_defaults

    monkeypatch.delenv("LP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    set_defaults()
    assert os.environ["LP_NUM_THREADS"] == "0" and os.environ["MUJOCO_GL"] == "osmesa"
    monkeypatch.setenv("LP_NUM_THREADS", "4")
    set_defaults()
    assert os.environ["LP_NUM_THREADS"] == "4"
