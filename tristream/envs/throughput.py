"""Env-only throughput: the ceiling a zero-cost policy gets from N envs stepped in one process."""
from __future__ import annotations

import time
from typing import Any

import numpy as np


def env_only_throughput(env_name: str, num_envs: int, steps: int, *, seed: int = 0, warmup: int = 5,
                        policy: str = "random", **env_kwargs: Any) -> dict:
    """Step ``num_envs`` envs round-robin for ``steps`` steps each with random (or zero) actions.

    Episodes auto-reset on terminated/truncated (resets are counted in the time). The first ``warmup``
    steps per env (renderer / GL context creation) are not timed. Returns
    {"env_steps_per_s", "steps" (total env steps timed), "seconds", "num_envs", "episodes",
    "step_ms", "reset_ms"}; the last two describe single calls (see ``time_stats``), the figures to set
    the latency model (envs/latency.py) from.
    """
    from tristream.envs import make_env

    if policy not in ("random", "zero"):
        raise ValueError("policy must be 'random' or 'zero'")
    envs = [make_env(env_name, **env_kwargs) for _ in range(num_envs)]
    rng = np.random.default_rng(seed)
    adim = envs[0].spec.action_dim
    next_seed = seed
    for e in envs:
        e.reset(next_seed)
        next_seed += 1

    step_s: list[float] = []
    reset_s: list[float] = []

    def run(n: int) -> int:
        nonlocal next_seed
        episodes = 0
        for _ in range(n):
            for e in envs:
                a = rng.uniform(-1, 1, adim).astype(np.float32) if policy == "random" else np.zeros(adim, np.float32)
                t = time.perf_counter()
                _, _, term, trunc, _ = e.step(a)
                step_s.append(time.perf_counter() - t)
                if term or trunc:
                    t = time.perf_counter()
                    e.reset(next_seed)
                    reset_s.append(time.perf_counter() - t)
                    next_seed += 1
                    episodes += 1
        return episodes

    run(warmup)
    step_s.clear()
    reset_s.clear()
    t0 = time.perf_counter()
    episodes = run(steps)
    dt = time.perf_counter() - t0
    for e in envs:
        e.close()
    total = steps * num_envs
    return {"env_steps_per_s": total / dt if dt > 0 else float("inf"), "steps": total, "seconds": dt,
            "num_envs": num_envs, "episodes": episodes, "step_ms": time_stats(step_s),
            "reset_ms": time_stats(reset_s)}


def time_stats(seconds: list[float]) -> dict[str, float]:
    """Durations (s) -> {"n", "median", "p90", "p99", "max" (ms), "log_sigma"}: log_sigma is the std of the
    log durations, the ``latency_sigma`` of a log-normal with the same spread. {"n": 0} when empty."""
    if not seconds:
        return {"n": 0}
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {"n": len(ms), "median": float(np.median(ms)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "max": float(ms.max()),
            "log_sigma": float(np.log(np.maximum(ms, 1e-6)).std())}
