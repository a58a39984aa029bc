"""Shared fixtures: tiny configs on the numpy toy env (no OpenGL) unless a test needs MuJoCo."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does: no spinning OpenMP threads

from tristream.config import Config, load_config  # noqa: E402


def tiny_config(tmp_path, *overrides: str) -> Config:
    return load_config(Config, "tiny", ["env.name=toy", f"run.dir={tmp_path}", *overrides])


@pytest.fixture
def tiny(tmp_path):
    return lambda *o: tiny_config(tmp_path, *o)


# Metrics that differ between two runs of the same training: clocks, and how much of an update overlapped its
# rollout (timing; the update is the same). Equivalence tests compare every other metric.
RUN_CLOCKS = frozenset({"rollout_s", "update_s", "step_s", "env_steps_per_s", "wall_s_total", "time",
                        "overlap_optimizer_steps"})


def text_config(tmp_path, *overrides: str) -> Config:
    """The lm_text preset (a fresh tiny LM on the text env) cut to seconds: 2 groups of 4 samples per step."""
    return load_config(Config, "lm_text", [f"run.dir={tmp_path}", "rollout.num_envs=8", "rollout.group_size=4",
                                           "algo.global_batch=4", "algo.micro_batch=2", "train.steps=2",
                                           "runtime.groups_per_worker=2", "runtime.batch_max=4",
                                           "runtime.timeout_s=60", *overrides])


@pytest.fixture
def text(tmp_path):
    return lambda *o: text_config(tmp_path, *o)

import torch  # noqa: E402

# One intra-op thread: tests run beside other processes on 2 cores, where oversubscribed BLAS threads
# slow everything down by orders of magnitude.
torch.set_num_threads(1)
