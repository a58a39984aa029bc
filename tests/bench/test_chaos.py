"""`tristream bench chaos` on tiny settings: a real run under injected faults, audited afterwards."""
import json

import pytest

from tristream.bench import chaos
from tristream.cli import main

pytestmark = pytest.mark.slow  # a minute of training under faults

TINY = ["--preset", "tiny", "env.name=toy", "collect.episodes=2", "sft.steps=2"]


def test_a_run_under_faults_trains_nothing_twice_and_leaves_nothing_behind(tmp_path, monkeypatch):
    # every kind of fault in turn, so each injector action runs at least once in a short drill
    kinds = iter(list(chaos.FAULTS) * 10)
    monkeypatch.setattr(chaos, "_pick", lambda rng, faults: next(kinds))
    assert main(["bench", "chaos", *TINY, "--seconds", "60", "--fault-every", "8", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "chaos.json").read_text())
    done = {f["kind"] for f in r["faults"] if f["done"]}
    assert {"kill:env_worker", "kill:inference", "stop:role", "corrupt:checkpoint"} <= done, r["faults"]
    assert sum(r["restarts"].values()) >= 3 and r["global_steps"] >= 2
    assert r["segments_trained"] > 0 and r["segments_trained_twice"] == 0 and r["steps_beyond_lag_bound"] == 0
    assert r["end"]["shm_blocks"] == 0 and r["end"]["role_processes_alive"] == []
    assert r["resume"]["exit_code"] == 0 and r["resume"]["skipped"]  # past the damaged newest checkpoint
    assert r["samples"] and all(s["roles"] for s in r["samples"])
    assert "rl" in r["final_eval"]  # the resumed run's held-out evaluation
    # sync: restarted rollouts rerun identically, so an undisturbed run to the same step ends with the same policy
    c = r["control"]
    assert r["mode"] == "sync" and c["exit_code"] == 0 and c["global_steps"] == r["global_steps"] + 1
    assert c["max_abs_weight_diff"] == 0.0, c
    assert c["eval"]["success"] == c["chaos_eval"]["success"]  # the same weights on the same held-out episodes
    report = chaos.format_report(r)
    assert "largest weight difference from the drill's final policy 0" in report
    assert f"segments of a later step): {r['segments_dropped']}\n" in report
    assert (tmp_path / "chaos_memory.png").exists()


def test_chaos_needs_a_fresh_run_folder_and_the_local_or_ray_backend(tmp_path, capsys):
    (tmp_path / "chaos_run").mkdir()
    assert main(["bench", "chaos", *TINY, "--seconds", "1", "--out", str(tmp_path)]) == 2
    assert "chaos_run exists" in capsys.readouterr().err
    (tmp_path / "chaos_run").rmdir()
    (tmp_path / "control_run").mkdir()  # the control run's folder must be fresh too
    assert main(["bench", "chaos", *TINY, "--seconds", "1", "--out", str(tmp_path)]) == 2
    assert "control_run exists" in capsys.readouterr().err
    assert main(["bench", "chaos", *TINY, "runtime.backend=serial", "--out", str(tmp_path / "x")]) == 2
    assert "the local or the ray backend (got runtime.backend=serial)" in capsys.readouterr().err


def test_a_ray_run_survives_a_lost_node_and_a_stopped_actor(tmp_path, monkeypatch):
    """Two Ray nodes on loopback: an actor is stopped, then the env workers' node crashes (and is started
    again 3 s later), twice; each time the roles are placed again and training goes on, nothing trained twice."""
    pytest.importorskip("ray")
    kinds = iter(["stop:role", "kill:node", "kill:node"] * 10)
    monkeypatch.setattr(chaos, "_pick", lambda rng, faults: next(kinds))
    monkeypatch.setattr(chaos, "NODE_DOWN_S", 3.0)
    assert main(["bench", "chaos", *TINY, "runtime.backend=ray", "runtime.timeout_s=6", "--seconds", "100",
                 "--fault-every", "25", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "chaos.json").read_text())
    done = [f["kind"] for f in r["faults"] if f["done"]]
    assert {"kill:node", "stop:role"} <= set(done), r["faults"]
    log = (tmp_path / "run.log").read_text()
    assert "the actor is stopped or hung" in log  # the stopped actor, found after runtime.timeout_s
    assert sum(r["restarts"].values()) >= 2, log[-5000:]  # it, and the first node loss at least
    assert r["segments_trained"] > 0 and r["segments_trained_twice"] == 0 and r["steps_beyond_lag_bound"] == 0
    assert r["end"]["role_processes_alive"] == [] and r["resume"]["exit_code"] == 0
    assert "learner" in r["memory"]  # roles restarted this often are never old enough to count


def test_memory_growth_separates_private_memory_from_shared_pages():
    """A process whose RSS grows only by touching shared memory (as Ray's object store or /dev/shm blocks
    are) shows RSS growth and a flat private part."""
    samples = [{"t": 10.0 * i, "roles": {"learner": {"rss_mb": 1000.0 + 20 * i, "anon_mb": 800.0, "fds": 9,
                                                     "age_s": 10.0 * i + 60}}} for i in range(20)]
    m = chaos._memory_growth(samples)["learner"]
    assert m["ratio"] > 1.2 and m["anon_ratio"] == 1.0 and m["fds_max"] == 9
    assert "private MB at end" in chaos.format_report({**_EMPTY, "memory": {"learner": m}})
    old = [{"t": s["t"], "roles": {"learner": {k: v for k, v in s["roles"]["learner"].items() if k != "anon_mb"}}}
           for s in samples]  # a result written before the private part was sampled
    assert "anon_ratio" not in chaos._memory_growth(old)["learner"]


_EMPTY = {"faults": [], "restarts": {}, "global_steps": 0, "segments_trained": 0, "segments_trained_twice": 0,
          "lag_bound": 1, "steps_beyond_lag_bound": 0, "resume": {"exit_code": 0, "resumed_from": None, "skipped": []},
          "end": {"shm_blocks": 0, "role_processes_alive": [], "checkpoints": {}}}
