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
    monkeypatch.setattr(chaos, "_pick", lambda rng: next(kinds))
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
    assert (tmp_path / "chaos_memory.png").exists()


def test_chaos_needs_a_fresh_run_folder_and_the_local_backend(tmp_path, capsys):
    (tmp_path / "chaos_run").mkdir()
    assert main(["bench", "chaos", *TINY, "--seconds", "1", "--out", str(tmp_path)]) == 2
    assert "chaos_run exists" in capsys.readouterr().err
    assert main(["bench", "chaos", *TINY, "runtime.backend=serial", "--out", str(tmp_path / "x")]) == 2
    assert "local backend" in capsys.readouterr().err
