"""Rendering defaults for machines without a display, applied by the MuJoCo envs before MuJoCo loads.

Both are defaults only: a value already in the environment wins.
"""
from __future__ import annotations

import os


def set_defaults() -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")  # Mesa llvmpipe on CPU-only machines, a GPU's EGL elsewhere
    # llvmpipe hands each frame to LP_NUM_THREADS rasteriser threads (default: one per core). For small camera
    # images the hand-off costs more than it saves: a 64x64 two-camera tabletop step takes ~23% less CPU (env
    # steps/s +30%) rasterised in the calling thread; env workers are parallel processes already.
    # Read when the first GL context is made, so this must run before any rendering.
    os.environ.setdefault("LP_NUM_THREADS", "0")
