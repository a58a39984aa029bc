"""A latency model for heavy simulators: extra wall time per step and per reset, drawn from a
log-normal (sigma sets the length of the tail), added around any env.

A stress test of the scheduling, not a calibration: LIBERO-Spatial measured in one process here (two
128x128 cameras, random actions; `tristream bench env` prints these figures) takes a median 140 ms per
step with a log-sigma of only 0.11, and 6 s per reset (docs/benchmarks.md, "With the long-tail latency
model").

The extra time is spent sleeping, not computing: it models a simulator whose step is slow and variable
without also loading the CPU, so results with it show what scheduling does about the tail. Report such
results apart from plain tabletop figures.

Alone, an env sleeps its own draws. Inside an EnvWorker (``deferred=True``) the draws are collected and
the worker sleeps once per group for the slowest env's total: a group behaves like one vectorised
simulator whose envs step concurrently, so a group step lasts as long as its slowest env, which is the
tail that lockstep scheduling waits for.
"""
from __future__ import annotations

import time

import numpy as np

from tristream.envs.base import Env


class LatencyEnv(Env):
    def __init__(self, env: Env, *, step_ms: float, reset_ms: float = 0.0, sigma: float = 1.0, seed: int = 0,
                 deferred: bool = False):
        self.env, self.spec = env, env.spec
        self.step_ms, self.reset_ms, self.sigma = step_ms, reset_ms, sigma
        self.deferred = deferred
        self.owed_s = 0.0  # deferred latency not slept yet
        self._rng = np.random.default_rng(seed)

    def _sleep(self, median_ms: float) -> None:
        if median_ms > 0:
            seconds = median_ms * float(np.exp(self.sigma * self._rng.standard_normal())) / 1000.0
            if self.deferred:
                self.owed_s += seconds
            else:
                time.sleep(seconds)

    def take_owed(self) -> float:
        """The deferred latency since the last call (seconds), for the caller to sleep."""
        owed, self.owed_s = self.owed_s, 0.0
        return owed

    def reset(self, seed: int):
        self._sleep(self.reset_ms)
        return self.env.reset(seed=seed)

    def step(self, action):
        self._sleep(self.step_ms)
        return self.env.step(action)

    def expert_action(self, noise: float = 0.0):
        return self.env.expert_action(noise)

    @property
    def task(self) -> str:
        return self.env.task

    def render_frame(self):
        """The wrapped env's picture for eval videos (envs without cameras), or None."""
        return getattr(self.env, "render_frame", lambda: None)()

    def close(self) -> None:
        self.env.close()
