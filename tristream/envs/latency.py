"""A latency model for heavy simulators: extra wall time per step and per reset, drawn from a
log-normal (long-tailed, like LIBERO's physics and rendering times), added around any env.

The extra time is spent sleeping, not computing: it models a simulator whose step is slow and variable
without also loading the CPU, so results with it show what scheduling does about the tail. Report such
results apart from plain tabletop figures.
"""
from __future__ import annotations

import time

import numpy as np

from tristream.envs.base import Env


class LatencyEnv(Env):
    def __init__(self, env: Env, *, step_ms: float, reset_ms: float = 0.0, sigma: float = 1.0, seed: int = 0):
        self.env, self.spec = env, env.spec
        self.step_ms, self.reset_ms, self.sigma = step_ms, reset_ms, sigma
        self._rng = np.random.default_rng(seed)

    def _sleep(self, median_ms: float) -> None:
        if median_ms > 0:
            time.sleep(median_ms * float(np.exp(self.sigma * self._rng.standard_normal())) / 1000.0)

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

    def close(self) -> None:
        self.env.close()
