"""The files under examples/ as a user runs them: Gymnasium envs (pixels, state-only, Dict) and a custom
policy, trained for a few steps in each mode through the CLI and evaluated (init vs RL)."""
import json

import pytest

from tristream.cli import main

FAST = ["--preset", "tiny", "--no-progress", "env.max_episode_steps=8", "eval.episodes=2", "train.steps=2"]
PIXELS = ["env.name=gym", "env.gym.id=examples.pixel_reach:PixelReachEnv", "env.kwargs.size=32"]
DICT = [*PIXELS, "env.kwargs.obs_mode=dict"]
PENDULUM = ["env.name=gym", "env.gym.id=Pendulum-v1"]
MLP = [*PENDULUM, "policy.name=examples.mlp_policy:make_mlp_policy"]

CASES = [("pixels", PIXELS, m) for m in ("sync", "async-rollout", "async")] + \
        [("pendulum", PENDULUM, m) for m in ("sync", "async")] + \
        [("dict", DICT, m) for m in ("sync", "async")] + \
        [("mlp_policy", MLP, m) for m in ("sync", "async-rollout", "async")] + \
        [("builtin_cnn", [*PIXELS, "policy.name=cnn", "env.image_size=64", "policy.chunk_len=1"], "async"),
         ("builtin_mlp_fixed_horizon", [*PENDULUM, "policy.name=mlp", "rollout.steps_per_env=3"], "async"),
         ("state_obs", [*PIXELS, "env.kwargs.obs_mode=state", "policy.name=mlp"], "sync")]


@pytest.mark.parametrize("name,overrides,mode", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_example_trains_and_evaluates(tmp_path, name, overrides, mode, capsys):
    assert main(["train", *FAST, *overrides, f"runtime.mode={mode}", f"run.dir={tmp_path}", "run.name=r"]) == 0
    out = capsys.readouterr().out
    assert "has no scripted expert" in out  # gymnasium envs skip demos and SFT
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert set(summary["eval"]) == {"init", "rl"} and summary["eval"]["rl"]["episodes"] == 2
    metrics = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert max(m.get("step", 0) for m in metrics) == 2


def test_serial_backend_runs_a_gymnasium_env(tmp_path):
    assert main(["train", *FAST, *DICT, "runtime.backend=serial", f"run.dir={tmp_path}", "run.name=r"]) == 0
    assert (tmp_path / "r" / "checkpoints" / "latest").exists()


@pytest.mark.slow  # 10 s or more (make test-fast skips it)
def test_ray_backend_runs_a_gymnasium_env(tmp_path):
    """Ray actors build the adapter from the config like any env (a local instance, started and stopped)."""
    pytest.importorskip("ray")
    assert main(["train", *FAST, *DICT, "runtime.backend=ray", "runtime.mode=async", "ray.num_cpus=2",
                 f"run.dir={tmp_path}", "run.name=r"]) == 0
    assert (tmp_path / "r" / "checkpoints" / "latest").exists()


def test_resume_continues_a_gymnasium_recipe_run(tmp_path):
    """No demos, no SFT: --resume must still take the recipe path (init vs rl evaluation, summary)."""
    assert main(["train", *FAST, *MLP, "runtime.backend=serial", f"run.dir={tmp_path}", "run.name=r"]) == 0
    (tmp_path / "r" / "summary.json").unlink()
    assert main(["train", "--resume", str(tmp_path / "r"), "--no-progress", "train.steps=3"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert set(summary["eval"]) == {"init", "rl"}
    steps = [json.loads(line).get("step") for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert 3 in steps


def test_eval_command_on_a_gymnasium_run(tmp_path):
    assert main(["train", *FAST, *PIXELS, "train.steps=1", f"run.dir={tmp_path}", "run.name=r"]) == 0
    assert main(["eval", *FAST, *PIXELS, str(tmp_path / "r"), "--episodes", "2", "--out", str(tmp_path / "ev")]) == 0
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert result["episodes"] == 2 and "PixelReachEnv" in result["tasks"]
    assert list((tmp_path / "ev").glob("*.gif"))


def test_unsupported_env_fails_with_the_space_named(tmp_path, capsys):
    code = main(["train", *FAST, "env.name=gym", "env.gym.id=CartPole-v1", f"run.dir={tmp_path}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "CartPole-v1" in err and "Discrete(2)" in err and "Supported:" in err


def test_rankable_failures_counts_deterministic_and_sampled_outcomes(tmp_path, capsys):
    from examples.rankable_failures import main, summarise
    # (deterministic success, sampled successes of 4) per seed
    r = summarise([(True, 4), (False, 0), (False, 2), (True, 1), (False, 4)], samples=4)
    assert r == {"seeds": 5, "deterministic": 2, "sampled": 11, "sampled_of": 20, "failures": 3, "rankable": 2,
                 "mixed": 2}
    from tristream.config import Config, load_config
    from tristream.policies import save_policy
    from tristream.policies.from_config import build_policy
    from tristream.envs.from_config import env_from_config
    cfg = load_config(Config, "tiny", ["env.name=toy", "env.max_episode_steps=6"])
    save_policy(build_policy(cfg, env_from_config(cfg.env).spec), tmp_path / "p")
    out = main([str(tmp_path / "p"), "--seeds", "3", "--samples", "2", "--preset", "tiny", "env.name=toy",
                "env.max_episode_steps=6"])
    assert list(out) == ["toy"] and out["toy"]["seeds"] == 3 and out["toy"]["sampled_of"] == 6
    assert out["toy"]["rankable"] <= out["toy"]["failures"] == 3 - out["toy"]["deterministic"]
    assert "1 deterministic + 2 sampled episodes each" in capsys.readouterr().out


def test_a_loss_added_by_import_path_trains(tmp_path):
    """docs/extending.md's worked example: a loss defined outside tristream, named on the command line."""
    assert main(["train", *FAST, *PIXELS, "algo.loss=examples.clipped_pg:SPEC", "runtime.mode=async",
                 f"run.dir={tmp_path}", "run.name=r"]) == 0
    metrics = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in metrics if m.get("phase") == "train"]
    assert len(train) == 2 and all(0 < m["weight_mean"] <= 2.0 for m in train)


def test_an_unknown_loss_is_named_with_the_valid_ones(tmp_path, capsys):
    assert main(["train", *FAST, "algo.loss=trpo", f"run.dir={tmp_path}"]) != 0
    err = capsys.readouterr().err
    assert "algo.loss" in err and "'trpo'" in err and "fiberpo_domain" in err
