"""Rendering defaults for machines without a display, applied by the MuJoCo envs before MuJoCo loads, and by
the gymnasium adapter before it imports a user's env (whose module may load MuJoCo).

Both are defaults only: a value already in the environment wins.
"""
from __future__ import annotations

import os


#: MUJOCO_GL: Mesa llvmpipe on CPU-only machines, a GPU's EGL elsewhere. LP_NUM_THREADS: llvmpipe hands each
#: frame to that many rasteriser threads (default: one per core); for small camera images the hand-off costs
#: more than it saves (a 64x64 two-camera tabletop step takes ~23% less CPU rasterised in the calling thread)
#: and env workers are parallel processes already. Read when the first GL context is made.
DEFAULTS = {"MUJOCO_GL": "egl", "LP_NUM_THREADS": "0"}


def set_defaults() -> None:
    """Apply :data:`DEFAULTS` where the environment has no value; must run before any rendering."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
