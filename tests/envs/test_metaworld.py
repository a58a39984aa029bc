"""Meta-World through tristream's Env interface (the `metaworld` extra; CI installs it through the `test` extra).

The name handling and the missing-extra error are tested without Meta-World; the smoke tests need it and
are skipped, with the install line as the reason, only where it is absent.
"""
from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from tristream.envs import env_names, make_env
from tristream.envs.extras import MissingExtraError
from tristream.envs.metaworld import tasks as task_lib

HAVE_MW = importlib.util.find_spec("metaworld") is not None
needs_mw = pytest.mark.skipif(not HAVE_MW, reason="Meta-World not installed: pip install 'tristream[metaworld]'")


# ----------------------------------------------------------------------------- without the extra
def test_task_names_sets_and_instructions():
    assert len(task_lib.MT50) == 50 and len(task_lib.MT10) == 10 and set(task_lib.MT10) <= set(task_lib.MT50)
    sentences = [task_lib.instruction(t) for t in task_lib.MT50]
    assert len(set(sentences)) == 50 and all(s and s == s.strip() and s.islower() for s in sentences)
    assert task_lib.normalize_task("reach") == "reach-v3" == task_lib.normalize_task("reach-v3")
    assert task_lib.resolve_tasks("mt10", None) == task_lib.MT10
    assert task_lib.resolve_tasks(None, None) == task_lib.MT50
    assert task_lib.resolve_tasks(None, ["push", "reach-v3", "push-v3"]) == ("push-v3", "reach-v3")
    names = env_names()
    assert {"metaworld", "metaworld/mt10", "metaworld/mt50", "metaworld/reach-v3"} <= set(names)
    assert sum(n.startswith("metaworld/") and n.endswith("-v3") for n in names) == 50


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown Meta-World task 'reech'.*Did you mean 'reach-v3'.*button-press-v3"):
        make_env("metaworld", tasks=["reech"])
    with pytest.raises(ValueError, match="fixed to 'reach-v3'"):
        make_env("metaworld/reach-v3", tasks=["push"])


def test_missing_extra_names_the_pip_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "metaworld", None)  # what an uninstalled package looks like to import
    monkeypatch.delitem(sys.modules, "tristream.envs.metaworld.env", raising=False)
    with pytest.raises(MissingExtraError, match=r"pip install 'tristream\[metaworld\]'"):
        make_env("metaworld/reach-v3")


def test_cli_reports_missing_extra_as_an_error(monkeypatch, capsys):
    from tristream.cli import main

    monkeypatch.setitem(sys.modules, "metaworld", None)
    monkeypatch.delitem(sys.modules, "tristream.envs.metaworld.env", raising=False)
    assert main(["bench", "env", "--preset", "tiny", "env.name=metaworld/reach-v3", "--steps", "5"]) == 2
    assert "tristream[metaworld]" in capsys.readouterr().err


# ----------------------------------------------------------------------------- with Meta-World
@needs_mw
def test_task_lists_match_metaworld():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS, MT10_V3

    assert set(task_lib.MT50) == set(ALL_V3_ENVIRONMENTS) and set(task_lib.MT10) == set(MT10_V3)


@pytest.fixture(scope="module")
def button():
    if not HAVE_MW:
        pytest.skip("Meta-World not installed: pip install 'tristream[metaworld]'")
    env = make_env("metaworld/button-press-v3", image_size=48, max_episode_steps=150)
    yield env
    env.close()


@needs_mw
def test_smoke_reset_step_images_instruction_success(button):
    env = button
    assert env.spec.action_dim == 4 and env.spec.state_dim == 8 and env.spec.camera_names == ("corner", "gripperPOV")
    obs = env.reset(3)
    assert obs["instruction"] == "press the button"
    assert obs["images"].shape == (2, 48, 48, 3) and obs["images"].dtype == np.uint8
    assert obs["state"].shape == (8,) and obs["state"].dtype == np.float32
    # Right way up: in the corner view the background (no skybox: black) is at the top, the wooden table
    # fills the bottom. Meta-World's raw render is upside down, which would make the top the brighter half.
    corner = obs["images"][0].astype(float).mean(axis=2)
    assert corner[:12].mean() + 30 < corner[-12:].mean()
    rng = np.random.default_rng(0)
    for _ in range(3):
        obs, r, term, trunc, info = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        assert isinstance(info["success"], bool) and info["task"] == "button-press-v3"
        assert r == 0.0 and not term and not trunc
    again = env.reset(3)
    np.testing.assert_array_equal(again["images"], env.reset(3)["images"])  # an episode is a function of its seed


@needs_mw
def test_expert_succeeds_with_terminated_and_reward(button):
    env = button
    obs = env.reset(7)
    for t in range(150):
        obs, r, term, trunc, info = env.step(env.expert_action())
        if term or trunc:
            break
    assert term and not trunc and info["success"] and r == 1.0, (t, info)


@needs_mw
def test_progress_shaping_telescopes_and_pays_success_most():
    """reward_shaping=True: phi(s') - phi(s) with phi = Meta-World's dense reward / 10, so an episode's
    shaping sums to phi(last) - phi(first) and an early success outscores a near miss that runs to the step
    limit. The raw dense reward (shaping="dense") pays that near miss about twice the success."""
    def episode(shaping, stop_at=None):  # the expert, standing still from step stop_at on
        env = make_env("metaworld/button-press-v3", image_size=16, max_episode_steps=100, cameras=["corner"],
                       reward_shaping=True, shaping=shaping)
        env.reset(7)
        raw = env.raw_env
        phi = [raw.evaluate_state(raw._get_obs(), np.zeros(4))[0] / 10]
        total = 0.0
        for t in range(100):
            a = env.expert_action() if stop_at is None or t < stop_at else np.zeros(4, np.float32)
            _, r, term, trunc, info = env.step(a)
            total += r
            if term or trunc:
                break
        phi.append(raw.evaluate_state(raw._get_obs(), np.zeros(4))[0] / 10)
        env.close()
        return total, bool(info["success"]), t + 1, phi

    success, ok, length, phi = episode("progress")
    assert ok and success == pytest.approx(1.0 + phi[1] - phi[0], abs=0.05)  # telescoped
    near_miss, ok, _, _ = episode("progress", stop_at=length - 6)
    assert not ok and success > near_miss + 0.5
    dense_success, _, _, _ = episode("dense")
    dense_near_miss, ok, _, _ = episode("dense", stop_at=length - 6)
    assert not ok and dense_near_miss > dense_success  # why "progress" is the default
    with pytest.raises(ValueError, match="shaping must be 'progress' or 'dense'"):
        make_env("metaworld/reach-v3", shaping="sparse")


def test_truncation_without_success():
    if not HAVE_MW:
        pytest.skip("Meta-World not installed: pip install 'tristream[metaworld]'")
    env = make_env("metaworld/reach-v3", image_size=16, max_episode_steps=4, cameras=["topview"], state="full")
    obs = env.reset(0)
    assert obs["state"].shape == (39,) and obs["images"].shape == (1, 16, 16, 3)
    goal = env.raw_env._target_pos.copy()
    for t in range(4):
        obs, r, term, trunc, info = env.step(np.zeros(4, np.float32))
    assert trunc and not term and not info["success"]
    env.reset(1)
    assert not np.allclose(env.raw_env._target_pos, goal)  # a new seed draws a new goal
    env.close()


def test_mt10_mix_takes_task_seed_mod_n():
    if not HAVE_MW:
        pytest.skip("Meta-World not installed: pip install 'tristream[metaworld]'")
    env = make_env("metaworld/mt10", image_size=16, cameras=["corner"], max_cached_tasks=2)
    assert env.spec.tasks == task_lib.MT10
    for seed in (0, 1, 2, 13):  # 13 % 10 == 3
        obs = env.reset(seed)
        assert env.task == task_lib.MT10[seed % 10] and obs["instruction"] == task_lib.instruction(env.task)
    assert list(env._sims) == [task_lib.MT10[2], task_lib.MT10[3]]  # least recently used sims are closed
    env.close()


def test_collect_writes_expert_demos(tmp_path, capsys):
    if not HAVE_MW:
        pytest.skip("Meta-World not installed: pip install 'tristream[metaworld]'")
    from tristream.cli import main
    from tristream.data import DemoDataset

    out = tmp_path / "mw.hdf5"
    args = ["collect", "--preset", "tiny", "env.name=metaworld/reach-v3", "env.max_episode_steps=100",
            "collect.episodes=2", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    ds = DemoDataset(out, camera_names=("corner", "gripperPOV"))
    assert ds.num_episodes == 2 and ds.action_dim == 4 and ds.state_dim == 8
    assert ds.instructions == ["reach the goal position"]
    assert all(ep["rewards"][-1] == 1.0 and ep["task"] == "reach-v3" for ep in ds.episodes)
    assert json.loads(json.dumps(ds.env_args[str(out)]))["env"] == "metaworld/reach-v3"


def test_eval_reports_per_task_success_and_videos(tmp_path):
    if not HAVE_MW:
        pytest.skip("Meta-World not installed: pip install 'tristream[metaworld]'")
    from tristream.config import Config, load_config
    from tristream.envs.from_config import env_from_config
    from tristream.policies.from_config import build_policy
    from tristream.workflow.evaluate import evaluate

    cfg = load_config(Config, "tiny", ["env.name=metaworld", "env.tasks=[reach,push]", "env.max_episode_steps=6",
                                       "env.image_size=16", "eval.videos=1"])
    spec = env_from_config(cfg.env).spec
    result = evaluate(build_policy(cfg, spec), cfg, episodes=4, out_dir=tmp_path, num_envs=2)
    assert set(result["tasks"]) == {"reach-v3", "push-v3"} and result["episodes"] == 4
    assert all(t["episodes"] == 2 and len(t["ci95"]) == 2 for t in result["tasks"].values())
    assert len(list(tmp_path.glob("eval_ep000_*.gif"))) == 1
