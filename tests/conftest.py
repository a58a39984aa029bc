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

import torch  # noqa: E402

# One intra-op thread: tests run beside other processes on 2 cores, where oversubscribed BLAS threads
# slow everything down by orders of magnitude.
torch.set_num_threads(1)
