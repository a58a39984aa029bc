"""Equivalence: the serial and the process backend train identically; resume continues exactly."""
import json

import pytest

from tristream.envs import make_env
from tristream.metrics.tracker import read_metrics
from tristream.workflow.rl import rl_train

# Wall-clock fields differ between any two runs; everything else must match exactly.
TIMING = {"rollout_s", "update_s", "step_s", "env_steps_per_s", "wall_s_total"}


def _train_rows(run_dir):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run_dir, "train")]


def _run(cfg, run_dir, resume=False):
    spec = make_env(cfg.env.name, image_size=cfg.env.image_size).spec
    return rl_train(cfg, run_dir, spec, resume=resume, progress=False)


def test_serial_and_local_backends_agree(tiny, tmp_path):
    rows = {}
    for backend in ("serial", "local"):
        cfg = tiny(f"runtime.backend={backend}", "train.steps=3", "runtime.groups_per_worker=2")
        _run(cfg, tmp_path / backend)
        rows[backend] = _train_rows(tmp_path / backend)
    assert len(rows["serial"]) == 3
    assert rows["serial"] == rows["local"]


def test_resume_continues_exactly(tiny, tmp_path):
    full = tiny("runtime.backend=serial", "train.steps=4", "train.save_every=2")
    _run(full, tmp_path / "full")
    part = tiny("runtime.backend=serial", "train.steps=2", "train.save_every=2")
    _run(part, tmp_path / "split")
    _run(full, tmp_path / "split", resume=True)
    assert _train_rows(tmp_path / "split") == _train_rows(tmp_path / "full")


def test_resume_without_checkpoint_names_the_problem(tiny, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no RL checkpoint"):
        _run(tiny(), tmp_path / "empty", resume=True)
