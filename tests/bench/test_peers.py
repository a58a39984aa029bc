"""bench peers: the settings both sides get, what it refuses to compare, and a clear error when a peer cannot be
installed (the side-by-side runs themselves are the benchmark, not a test)."""
from __future__ import annotations

import json

import pytest

from tristream.bench.peers import PEERS, Peer, PeerInstallError, _binned, _summary, check_comparable, \
    complete_rows, format_table, peer_python, plot_peers, sb3_settings, sf_settings
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
    ("rollout.steps_per_env=0", "rollout.steps_per_env=N"), ("algo.loss=decoupled_ppo", "algo.loss=ppo"),
])
def test_refuses_settings_the_peer_cannot_share(override, named):
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        check_comparable(_cfg(override), PEERS["sb3"])
    check_comparable(_cfg(), PEERS["sb3"])
    check_comparable(load_config(Config, "ppo_pixels", []), PEERS["sf"])
    with pytest.raises(ValueError, match="policy.name=cnn"):
        check_comparable(_cfg(), PEERS["sf"])
    # each side's normalisation has no counterpart in the other library
    with pytest.raises(ValueError, match="algo.norm_reward=false"):
        check_comparable(load_config(Config, "ppo_pixels", ["algo.norm_reward=true"]), PEERS["sf"])
    with pytest.raises(ValueError, match="algo.value_norm=false"):
        check_comparable(_cfg("algo.value_norm=true"), PEERS["sb3"])


def test_sample_factory_gets_the_same_settings(tmp_path):
    cfg = load_config(Config, "ppo_pixels", [])
    s = sf_settings(cfg, seed=2, seconds=200, train_dir=tmp_path)
    args = dict(a[2:].split("=", 1) for a in s["sf_args"])
    assert s["env"] == "examples.pixel_reach:PixelReachEnv" and s["env_kwargs"] == {"reward": "distance"}
    assert s["max_episode_steps"] == 50
    assert {k: args[k] for k in ("num_workers", "num_envs_per_worker", "worker_num_splits", "rollout", "batch_size", "num_batches_per_epoch",
                                 "num_epochs", "learning_rate", "gamma", "gae_lambda", "ppo_clip_ratio",
                                 "max_grad_norm", "normalize_returns", "use_rnn", "encoder_conv_mlp_layers",
                                 "train_for_seconds", "seed")} == {
        "num_workers": "2", "num_envs_per_worker": "8", "worker_num_splits": "2", "rollout": "32", "batch_size": "512",
        "num_batches_per_epoch": "1", "num_epochs": "2", "learning_rate": "0.0003", "gamma": "0.98",
        "gae_lambda": "0.95", "ppo_clip_ratio": "0.2", "max_grad_norm": "4.0", "normalize_returns": "True",
        "use_rnn": "False", "encoder_conv_mlp_layers": "512", "train_for_seconds": "3800", "seed": "2"}
    # what tristream's cnn policy does: images scaled to [0, 1], a state-independent std, bootstrapped time limits
    assert (args["obs_scale"], args["normalize_input"], args["adaptive_stddev"], args["value_bootstrap"]) == \
        ("255.0", "False", "False", "True")


def test_a_peer_that_cannot_be_installed_is_a_clear_error(tmp_path):
    peer = Peer("nosuch", ("tristream-no-such-package==0.0.0",), "sb3_ppo.py", "tristream-no-such-package",
                "env_steps", "mlp")
    with pytest.raises(PeerInstallError) as e:
        peer_python(peer, tmp_path, pip_args=("--no-index", "--find-links", str(tmp_path)))
    msg = str(e.value)
    assert "could not install peer 'nosuch'" in msg and "tristream-no-such-package" in msg and "rerun" in msg
    assert not (tmp_path / "nosuch" / ".installed").exists()  # the next run tries again


def test_curves_are_binned_summarised_tabled_and_plotted(tmp_path):
    rows = [{"env_steps": s, "wall_s": s / 10, "return": r} for s, r in [(10, 1.0), (20, 3.0), (60, 5.0), (100, 7.0)]]
    assert _binned(rows, "env_steps", total=100, bins=4) == [2.0, None, 5.0, 7.0]
    assert _binned(rows, "wall_s", total=10, bins=2) == [2.0, 6.0]
    run = _summary(rows, wall_s=12.0, cpu_s=12.0, total=100, budget="env_steps", bins=4)
    assert run["curve"] == [2.0, None, 5.0, 7.0] and run["final"] == 7.0 and run["env_steps"] == 100
    assert run["steady_steps_per_s"] == pytest.approx((100 - 20) / (10 - 2))  # after the first 20% of the run
    spread = {k: {"median": run[k], "min": run[k], "max": run[k]} for k in ("final", "wall_s", "steady_steps_per_s",
                                                                           "cpu_busy")}
    result = {"peer": "sb3", "peer_version": "x", "env_id": "Hopper-v5", "seeds": 1, "bins": 4,
              "budget": "env_steps", "budget_value": 100_000, "runs": {"sb3": [run], "tristream": [run]},
              "summary": {"sb3": spread, "tristream": spread}}
    table = format_table(result)
    assert "| | return at 50k steps | return at 100k steps | wall time (s) | env steps/s (steady) | CPU busy |" in table
    assert "| sb3 x | - | 7 [7, 7] | 12 [12, 12] | 10 [10, 10] |" in table
    assert "tristream vs sb3: final return 1.00x, env steps/s 1.00x" in table
    assert plot_peers(result, tmp_path / "p.png").stat().st_size > 1000
    # a second tristream side (bench peers --also vla:policy.name=vla) gets its row and its comparison
    slow = dict(run, final=3.0, curve=[1.0, None, 2.0, 3.0], steady_steps_per_s=5.0)
    result["runs"]["tristream vla"] = [slow]
    result["summary"]["tristream vla"] = {k: {"median": slow[k], "min": slow[k], "max": slow[k]} for k in spread}
    table = format_table(result)
    assert "| tristream vla | - | 3 [3, 3] | 12 [12, 12] | 5 [5, 5] |" in table
    assert "tristream vla vs sb3: final return 0.43x, env steps/s 0.50x" in table
    assert plot_peers(result, tmp_path / "p3.png").stat().st_size > 1000


def test_cli_names_what_to_change_before_installing_anything(tmp_path, capsys, monkeypatch):
    from tristream.cli import main
    monkeypatch.setenv("TRISTREAM_PEERS_DIR", str(tmp_path / "peers"))
    assert main(["bench", "peers", "--preset", "tiny", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bench peers --peer sb3 compares like with like" in err and "policy.name=mlp" in err
    assert "ppo_mujoco" in err and not (tmp_path / "peers").exists()
    assert main(["bench", "peers", "--peer", "nope", "--preset", "ppo_mujoco", "--out", str(tmp_path)]) == 2
    assert "unknown peer 'nope'; valid: ['sb3', 'sf']" in capsys.readouterr().err


def test_a_run_past_its_time_is_stopped_with_every_process_it_started(tmp_path):
    """The peer's worker processes are stopped with it (a library's children must not outlive the benchmark)."""
    import subprocess
    import sys
    from tristream.bench.peers import _run
    script = ("import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)")
    wall, _ = _run([sys.executable, "-c", script], tmp_path / "run.log", seconds=1.0)
    assert wall < 30
    left = subprocess.run(["pgrep", "-f", "time.sleep\\(600\\)"], capture_output=True, text=True).stdout.split()
    assert not left
    with pytest.raises(RuntimeError, match="exit 3"):
        _run([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], tmp_path / "fail.log")


def test_the_cpu_of_worker_processes_counts_although_they_are_never_waited_for(tmp_path):
    """A library's workers are killed with the group, never reaped: their CPU must still count."""
    import sys
    from tristream.bench.peers import _run
    script = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
              "'t = __import__(\"time\").time()\\nwhile __import__(\"time\").time() - t < 60: pass']); time.sleep(600)")
    wall, cpu = _run([sys.executable, "-c", script], tmp_path / "run.log", seconds=3.0)
    assert cpu >= 1.0, (wall, cpu)  # the busy child, about 2.5 of its 3 s


def test_negative_returns_are_compared_by_difference_not_ratio():
    from tristream.bench.peers import _compare
    assert _compare({"median": 600.0}, {"median": 500.0}) == "1.20x"
    assert _compare({"median": -19.0}, {"median": -13.0}) == "-6.0"  # worse, although -19 / -13 = 1.46


def test_a_half_written_metrics_line_is_left_for_the_next_poll():
    """The run appends to metrics.jsonl while the benchmark polls it: a line without its newline is not read
    (it ended a 600 s comparison with a JSON error)."""
    assert complete_rows('{"step": 1}\n{"step": 2}\n{"step": 3, "ret') == [{"step": 1}, {"step": 2}]
    assert complete_rows("") == [] and complete_rows('{"step": 1}') == []
