"""Reward scaling by the running spread of the discounted return (Stable-Baselines3's ``VecNormalize`` with
``norm_reward``, gymnasium's ``NormalizeReward``) and value-target standardisation (Sample Factory's
``normalize_returns``), as pure functions.

A dense reward such as minus a distance sums to returns of tens over an episode; the value loss then
dwarfs the policy loss in the gradient that ``algo.max_grad_norm`` clips, and the policy barely moves.
Dividing each reward by the standard deviation of the discounted return keeps value targets near unit
scale whatever the env's reward units. Rewards are not centred (that would change which policy is optimal).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RunningMeanStd:
    """Mean and (population) variance of every number seen so far, merged batch by batch (Chan et al.)."""

    mean: float = 0.0
    var: float = 1.0
    count: float = 1e-4  # a tiny prior count, so the first batch sets the statistics

    def update(self, x: np.ndarray) -> "RunningMeanStd":
        """The statistics after also seeing ``x`` (any shape); ``self`` is unchanged."""
        x = np.asarray(x, dtype=np.float64).ravel()
        if x.size == 0:
            return self
        b_mean, b_var, n = float(x.mean()), float(x.var()), float(x.size)
        total = self.count + n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + delta ** 2 * self.count * n / total
        return RunningMeanStd(self.mean + delta * n / total, m2 / total, total)


def scale_rewards(rewards: np.ndarray, running_return: float, stats: RunningMeanStd, gamma: float,
                  eps: float = 1e-8) -> tuple[np.ndarray, float, RunningMeanStd]:
    """Scale one env's consecutive rewards ``[T]``.

    ``running_return`` is that env's discounted return so far in the episode (0 at an episode's start):
    ``R_t = gamma * R_{t-1} + r_t``. The statistics take the T new values of R, then every reward is divided by
    ``sqrt(var(R) + eps)``. Returns (scaled rewards [T] float32, R after the last reward, new statistics);
    the caller resets the env's running return to 0 when its episode ends.
    """
    r = np.asarray(rewards, dtype=np.float64)
    ret = np.empty_like(r)
    acc = float(running_return)
    for t, x in enumerate(r):
        acc = gamma * acc + x
        ret[t] = acc
    stats = stats.update(ret)
    return (r / np.sqrt(stats.var + eps)).astype(np.float32), acc, stats


def standardize(x: np.ndarray, stats: RunningMeanStd, clip: float = 5.0, eps: float = 1e-8) -> np.ndarray:
    """``(x - mean) / std`` clipped to ``[-clip, clip]``, elementwise (any shape): value targets in the units the
    value head predicts with ``algo.value_norm``."""
    z = (np.asarray(x, dtype=np.float64) - stats.mean) / np.sqrt(stats.var + eps)
    return np.clip(z, -clip, clip).astype(np.float32)


def destandardize(z: np.ndarray, stats: RunningMeanStd, eps: float = 1e-8) -> np.ndarray:
    """``z * std + mean``, elementwise: a standardised value prediction back in return units (the inverse of
    :func:`standardize` where it does not clip)."""
    return (np.asarray(z, dtype=np.float64) * np.sqrt(stats.var + eps) + stats.mean).astype(np.float32)
