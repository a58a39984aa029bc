"""Every CLI command end to end on tiny settings, and the errors a user meets first."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tristream.cli import main

TOY = ["--preset", "tiny", "env.name=toy", "--no-progress"]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("train", "collect", "sft", "eval", "bench", "config"):
        assert cmd in out


def test_collect_sft_train_eval_chain(tmp_path, capsys):
    demos = tmp_path / "demos.hdf5"
    assert main(["collect", *TOY, "--out", str(demos)]) == 0
    assert demos.exists()
    assert main(["sft", *TOY, "--data", str(demos), "--out", str(tmp_path / "sft")]) == 0
    assert (tmp_path / "sft" / "policy.safetensors").exists()
    # per-dimension Gaussian tokens for RL: the checkpoint records it, so eval rebuilds the same policy
    assert main(["train", *TOY, f"run.dir={tmp_path}", "run.name=rl", f"train.init={tmp_path / 'sft'}",
                 "runtime.backend=serial", "train.rl_gaussian_tokens=dim"]) == 0
    run = tmp_path / "rl"
    latest = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    saved = json.loads((latest / "policy.json").read_text())
    assert saved["config"]["gaussian_tokens"] == "dim"
    for name in ("config.yaml", "metrics.jsonl", "learning_curve.png", "checkpoints/latest"):
        assert (run / name).exists(), name
    final = json.loads((run / "eval" / "rl.json").read_text())  # the evaluation train ends with, kept
    assert 0 <= final["success"] <= 1 and final["episodes"] > 0
    assert main(["eval", *TOY, str(run), "--episodes", "3", "--out", str(tmp_path / "ev")]) == 0
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert result["episodes"] == 3 and "goto" in result["tasks"]
    assert list((tmp_path / "ev").glob("*.gif"))
    # without --preset a run's checkpoint is evaluated on the run's own settings (toy, 20-step episodes),
    # not on the default preset's tabletop push
    capsys.readouterr()
    assert main(["eval", "--no-progress", str(latest), "--episodes", "2", "--out", str(tmp_path / "ev2")]) == 0
    assert f"evaluation settings from {run / 'config.yaml'}" in capsys.readouterr().out
    assert "goto" in json.loads((tmp_path / "ev2" / "eval.json").read_text())["tasks"]
    (run / "config.yaml").write_text("algo:\n  lrr: 1\n")  # a broken run config names its file
    assert main(["eval", "--no-progress", str(run), "--episodes", "2", "--out", str(tmp_path / "ev3")]) == 2
    err = capsys.readouterr().err
    assert str(run / "config.yaml") in err and "algo.lrr" in err and "--preset" in err


def test_collect_tasks_choose_the_demo_families(tmp_path, capsys):
    """collect.tasks records other families than env.tasks (a generalist SFT policy, RL on a subset);
    a family that does not exist is an error naming the valid ones."""
    import h5py
    demos = tmp_path / "demos.hdf5"
    args = ["collect", "--preset", "tiny", "--no-progress", "env.tasks=[push]", "collect.episodes=3",
            "collect.keep_failures=true", "--out", str(demos)]
    assert main([*args, "collect.tasks=[reach,pick]"]) == 0
    with h5py.File(demos, "r") as f:
        tasks = {str(g.attrs["task"]) for g in f["data"].values()}
        assert json.loads(f["data"].attrs["env_args"])["kwargs"]["tasks"] == ["reach", "pick"]
    assert tasks and tasks <= {"reach", "pick"}, tasks
    assert main([*args, "collect.tasks=[stack]"]) == 2
    assert "valid families: reach, push, pick, place" in capsys.readouterr().err


def test_default_recipe_on_tabletop_tiny(tmp_path, capsys):
    """The main job's code path (collect, SFT, RL on processes, eval of both) on the real MuJoCo suite."""
    assert main(["train", "--preset", "tiny", f"run.dir={tmp_path}", "--no-progress"]) == 0
    run = tmp_path / "tiny"
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["eval"]) == {"sft", "rl"}
    assert summary["eval"]["rl"]["episodes"] == 4
    assert "Success rate per task family" in capsys.readouterr().out
    # the summary is a result file: `tristream report` prints it under the command that made it
    assert summary["meta"]["command"] == f"tristream train --preset tiny run.dir={tmp_path} --no-progress"
    assert main(["report", str(run / "summary.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"`tristream train --preset tiny run.dir={tmp_path} --no-progress`; result file")
    assert "sft" in out and "rl" in out and "wall time" in out


def test_bench_env_prints_throughput(capsys):
    assert main(["bench", "env", *TOY, "--steps", "200", "--num-envs", "2"]) == 0
    assert "env steps/s" in capsys.readouterr().out


def test_config_errors_name_the_key(capsys):
    assert main(["config", "show", "algo.lrr=1"]) == 2
    assert "did you mean 'algo.lr'" in capsys.readouterr().err
    assert main(["config", "show", "algo.lr=abc"]) == 2
    assert "algo.lr" in capsys.readouterr().err
    assert main(["config", "show", "rollout.num_envs=-3"]) == 2
    assert "rollout.num_envs" in capsys.readouterr().err
    assert main(["config", "show", "runtime.backend=gpu"]) == 2
    assert "'local', 'serial'" in capsys.readouterr().err


def test_unknown_env_lists_valid_ones(capsys):
    assert main(["bench", "env", "--preset", "tiny", "env.name=tabletopp", "--steps", "10"]) == 2
    err = capsys.readouterr().err
    assert "unknown env 'tabletopp'" in err and "tabletop/reach" in err


def test_missing_dataset_and_checkpoint_name_the_file(tmp_path, capsys):
    assert main(["sft", *TOY, "--data", str(tmp_path / "nope.hdf5"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.hdf5" in capsys.readouterr().err
    assert main(["eval", *TOY, str(tmp_path / "missing_ckpt")]) == 2
    assert "missing_ckpt" in capsys.readouterr().err
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"not an hdf5 file at all")
    assert main(["sft", *TOY, "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.hdf5" in capsys.readouterr().err


def test_sigint_checkpoints_and_leaves_no_child(tmp_path):
    """Ctrl-C during RL: exit within seconds, a checkpoint to resume from, no orphaned role process."""
    cmd = [sys.executable, "-m", "tristream.cli", "train", *TOY, f"run.dir={tmp_path}", "run.name=sig",
           "train.steps=1000", "collect.episodes=2", "sft.steps=2", "runtime.backend=local"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step 2/"):
            break
        assert time.time() < deadline, "".join(lines)
    children = _children(proc.pid)
    assert children, "the local backend should run roles in child processes"
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert time.time() - t0 < 20
    assert proc.returncode == 0, out
    assert "resume with" in out
    assert (tmp_path / "sig" / "checkpoints" / "latest").exists()
    time.sleep(0.5)
    alive = [c for c in children if _alive(c)]
    assert not alive, [Path(f"/proc/{c}/cmdline").read_text() for c in alive]


@pytest.mark.slow  # 10 s or more (make test-fast skips it)
def test_sigint_on_ray_reaches_the_learner_actor_and_leaves_no_actor(tmp_path):
    """The driver forwards Ctrl-C to the learner actor: it checkpoints and stops; the local Ray instance the
    command started goes with every actor (their pids are in the placement printout)."""
    pytest.importorskip("ray")
    cmd = [sys.executable, "-m", "tristream.cli", "train", *TOY, f"run.dir={tmp_path}", "run.name=sig",
           "train.steps=1000", "collect.episodes=2", "sft.steps=2", "runtime.backend=ray", "ray.num_cpus=2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "RAY_ADDRESS": ""})
    deadline = time.time() + 180
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "step 2/" in line:
            break
        assert time.time() < deadline, "".join(lines)
    pids = [int(p) for p in re.findall(r"-> node \S+ \(\w+\), pid (\d+)", "".join(lines))]
    assert len(pids) == 4, "".join(lines)  # two env workers, inference, the learner
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + out
    assert "resume with" in out and (tmp_path / "sig" / "checkpoints" / "latest").exists()
    deadline = time.time() + 20
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if _alive(p)]


def test_bench_algos_stops_on_sigterm_and_continues_later(tmp_path):
    """A signal ends the whole bench (not just the run in progress) without recording the unfinished run."""
    demos, sft, out = tmp_path / "demos.hdf5", tmp_path / "sft", tmp_path / "algos"
    assert main(["collect", *TOY, "--out", str(demos)]) == 0
    assert main(["sft", *TOY, "--data", str(demos), "--out", str(sft)]) == 0
    cmd = [sys.executable, "-m", "tristream.cli", "bench", "algos", *TOY, f"train.init={sft}", "train.steps=1000",
           "runtime.backend=serial", "--out", str(out), "--seeds", "1", "--eval-episodes", "2", "--losses", "ppo"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline, lines = time.time() + 120, []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step 2/"):
            break
        assert time.time() < deadline, "".join(lines)
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, text
    assert "bench stopped" in text and "seed 0: success" not in text
    assert not (out / "algos.json").exists() and not (out / "default" / "ppo" / "seed0" / "result.json").exists()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that is not ours does not count)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.slow  # 10 s or more (make test-fast skips it)
def test_bench_throughput_writes_its_files(tmp_path, capsys):
    out = tmp_path / "bench"
    # 3 measured steps: an env worker reports its CPU time once per rollout, and in async it may have
    # finished the first measured step's rollout before the window opens (it runs a step ahead)
    assert main(["bench", "throughput", *TOY, "--out", str(out), "--repeats", "1", "--measure-steps", "3",
                 "runtime.groups_per_worker=2"]) == 0
    result = json.loads((out / "throughput.json").read_text())
    assert set(result["modes"]) == {"sync", "async-rollout", "async"}
    for mode, r in result["modes"].items():
        assert len(r["env_steps_per_s"]) == 1 and r["median"] == r["env_steps_per_s"][0]
        trace = json.loads((out / f"trace_{mode}.json").read_text())
        assert any(e.get("name") == "train" for e in trace["traceEvents"])
    assert result["ratio_vs_sync"]["sync"] == 1.0
    for r in result["modes"].values():  # CPU per role from the roles' own telemetry
        cores = r["cpu_cores"]
        assert {"env_worker0", "learner", "rest of machine"} <= set(cores), cores
        assert all(0.0 <= v <= os.cpu_count() + 0.5 for v in cores.values()), cores
    assert (out / "timeline.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "workload:" in printed and "env-only ceiling" in printed and "x sync" in printed
    assert "cpu cores async: env_worker0=" in printed
    ms = dict(kv.split("=") for kv in printed.split("cpu ms per env step async: ")[1].splitlines()[0].split())
    r = result["modes"]["async"]  # cores over env steps per second, per role, and their sum
    assert float(ms["learner"]) == pytest.approx(1000 * r["cpu_cores"]["learner"] / r["median"], abs=0.01)
    assert float(ms["total"]) == pytest.approx(sum(float(v) for k, v in ms.items() if k != "total"), abs=0.05)
    assert isinstance(result["env_only_steps_per_s"], float)  # the ceiling was measured (and skippable, below)


def test_cpu_cores_per_role_from_telemetry():
    from tristream.bench.throughput import cpu_cores
    from tristream.runtime.messages import Telemetry

    def tel(role, pid, cpu_s, t):
        return Telemetry(role, pid, [], {"cpu_s": cpu_s, "t": t})

    telemetry = [tel("learner", 1, 10.0, 100.0), tel("env_worker0", 2, 5.0, 100.0), tel("learner", 1, 11.5, 102.0),
                 tel("env_worker0", 2, 6.0, 104.0),
                 tel("inference", 3, 1.0, 101.0),  # one message only: no rate
                 tel("env_worker1", 4, 50.0, 100.0), tel("env_worker1", 5, 0.5, 101.0), tel("env_worker1", 5, 1.0, 103.0)]
    cores = cpu_cores(telemetry, machine_cores=1.6)
    assert cores == pytest.approx({"env_worker0": 0.25, "env_worker1": 0.25, "learner": 0.75, "rest of machine": 0.35})


def test_bench_throughput_can_skip_the_ceiling(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "throughput", *TOY, "--out", str(out), "--repeats", "1", "--measure-steps", "1",
                 "--modes", "sync,async:runtime.max_policy_lag=0", "--ceiling-steps", "0", "algo.advantage=gae",
                 "algo.critic_warmup=4"]) == 0
    result = json.loads((out / "throughput.json").read_text())
    assert result["env_only_steps_per_s"] is None
    printed = capsys.readouterr().out
    assert "env-only ceiling" not in printed
    # a mode variant (its own overrides) runs interleaved with the plain modes under its own name
    variant = result["modes"]["async:runtime.max_policy_lag=0"]
    assert variant["policy_lag_max"] == 0 and result["ratio_vs_sync"]["async:runtime.max_policy_lag=0"] > 0
    assert (out / "trace_async_runtime.max_policy_lag_0.json").exists()
    # a critic warm-up would measure value-only steps: the benchmark turns it off and says so
    assert "algo.critic_warmup=4 -> 0" in printed and result["workload"]["advantage"] == "gae"


def test_bench_mode_names_are_checked_before_any_work(tiny):
    from tristream.bench.throughput import mode_config
    from tristream.config.loader import ConfigError
    cfg = tiny()
    assert mode_config(cfg, "async@local:runtime.max_policy_lag=2").runtime.max_policy_lag == 2
    assert mode_config(cfg, "sync@ray").runtime.backend == "ray"
    with pytest.raises(ConfigError, match="unknown mode 'asink'.*valid: sync, async-rollout, async"):
        mode_config(cfg, "asink")
    with pytest.raises(ConfigError, match="max_polcy_lag"):
        mode_config(cfg, "async:runtime.max_polcy_lag=2")


def test_bench_algos_runs_every_loss_in_both_regimes(tmp_path, capsys):
    demos, sft = tmp_path / "demos.hdf5", tmp_path / "sft"
    assert main(["collect", *TOY, "--out", str(demos)]) == 0
    assert main(["sft", *TOY, "--data", str(demos), "--out", str(sft)]) == 0
    out = tmp_path / "algos"
    assert main(["bench", "algos", *TOY, f"train.init={sft}", "train.steps=2", "runtime.backend=serial",
                 "--out", str(out), "--seeds", "1", "--eval-episodes", "2", "--losses", "ppo,fiberpo"]) == 0
    result = json.loads((out / "algos.json").read_text())
    assert set(result["results"]) == {"default", "aggressive"}
    assert set(result["results"]["aggressive"]) == {"ppo", "fiberpo"}
    assert result["results"]["default"]["fiberpo"]["max_token_ratio"] >= 1.0
    assert (out / "algos.png").exists()
    assert "| aggressive | fiberpo |" in capsys.readouterr().out
    # a second run with the same settings reuses every finished (regime, loss, seed) instead of retraining
    metrics = out / "default" / "ppo" / "seed0" / "metrics.jsonl"
    stamp = metrics.stat().st_mtime_ns
    assert main(["bench", "algos", *TOY, f"train.init={sft}", "train.steps=2", "runtime.backend=serial",
                 "--out", str(out), "--seeds", "1", "--eval-episodes", "2", "--losses", "ppo,fiberpo"]) == 0
    assert metrics.stat().st_mtime_ns == stamp
    again = json.loads((out / "algos.json").read_text())
    assert again.pop("meta")["command"].startswith("tristream bench algos")  # when and how it was made
    result.pop("meta")
    assert again == result


def test_openmp_threads_sleep_only_where_roles_share_cores(monkeypatch):
    """Commands that start roles make idle OpenMP threads sleep; single-process LM work keeps the default
    (waking a thread for every small op halves LM decoding speed); a value the user set is kept."""
    from tristream.cli import _omp_wait_policy
    for argv, want in ((["train", "--preset", "lm_text"], "PASSIVE"), (["bench", "throughput"], "PASSIVE"),
                       (["bench", "decode", "--checkpoint", "x"], None), (["sft", "--preset", "lm_tiny"], None),
                       (["dpo"], None)):
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        _omp_wait_policy(argv)
        assert os.environ.get("OMP_WAIT_POLICY") == want, argv
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    _omp_wait_policy(["train"])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
