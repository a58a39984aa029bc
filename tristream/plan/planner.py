"""``tristream plan search``: the shard plan and batching settings with the best predicted throughput.

The number of envs, the algorithm and the policy stay as configured (they change what is learned); the
planner varies how the run is laid out: env workers x groups per worker (hence envs per group), the dynamic
batcher's ``batch_max`` (B_max), and in ``async`` the lag bound; then it refines ``batch_timeout_ms`` (T_max)
and the learner's and inference worker's torch threads (the counts the cost file measured) around the best.
Every candidate is built as a config through the schema's validation first, so a proposed plan always
loads; one over the machine's memory budget is skipped. The configured plan is always a candidate.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from tristream.bench.variants import with_overrides
from tristream.config.loader import ConfigError
from tristream.plan.costs import StageCosts, config_value
from tristream.plan.machine import Machine
from tristream.plan.model import Prediction, predict


@dataclass
class Candidate:
    overrides: dict[str, Any]
    prediction: Prediction
    memory_mb: float
    configured: dict[str, Any]  # the configured value of each key in ``overrides``

    def as_args(self) -> str:
        """The overrides that change the configured plan (empty: it is the configured plan)."""
        return " ".join(f"{k}={v}" for k, v in self.overrides.items() if self.configured.get(k) != v)


def memory_mb(costs: StageCosts, cfg) -> float:
    """The process tree's resident memory: each env worker's base and envs, the inference process and the
    learner's (with its optimizer state and a step's samples)."""
    return (cfg.runtime.env_workers * costs.process_mb + cfg.rollout.num_envs * costs.env_mb + costs.inference_mb
            + costs.learner_mb)


def build(cfg, overrides: dict[str, Any]):
    """``cfg`` with ``overrides``, or None where the schema refuses them (e.g. envs that do not divide)."""
    try:
        return with_overrides(cfg, [f"{k}={v}" for k, v in overrides.items()])
    except (ConfigError, ValueError):
        return None


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def search(cfg, costs: StageCosts, machine: Machine, *, warmup: int = 1, steps: int = 3,
           max_workers: int | None = None) -> list[Candidate]:
    """Candidates for ``cfg`` (its mode; sync has no batcher or lag to choose), best predicted first; the
    configured plan is among them (overrides ``{}``)."""
    n = cfg.rollout.num_envs
    max_workers = max_workers or max(2, machine.cores * machine.nodes)
    batching = cfg.runtime.mode != "sync" and not cfg.runtime.lockstep
    lags = (0, 1, 2) if cfg.runtime.mode == "async" else (cfg.runtime.max_policy_lag,)
    seen: dict[str, Candidate] = {}
    refused = {"schema": 0, "memory": 0}

    def evaluate(overrides: dict[str, Any]) -> None:
        key = repr(sorted(overrides.items()))
        if key in seen:
            return
        run_cfg = build(cfg, overrides)
        if run_cfg is None:
            refused["schema"] += 1
            return
        mem = memory_mb(costs, run_cfg)
        if mem > machine.memory_gb * 1024:
            refused["memory"] += 1
            return
        seen[key] = Candidate(overrides, predict(run_cfg, costs, machine, warmup=warmup, steps=steps), mem,
                              {k: config_value(cfg, k) for k in overrides})

    evaluate({})
    for workers in _divisors(n, max_workers):
        for groups in _divisors(n // workers, 8):
            layout = {"runtime.env_workers": workers, "runtime.groups_per_worker": groups}
            if not batching:
                evaluate(layout | {"runtime.max_policy_lag": lag} if len(lags) > 1 else layout)
                continue
            sizes = sorted({max(1, n // d) for d in (2, 4, 8)} | {n // (workers * groups)})
            for b_max, lag in itertools.product(sizes, lags):
                evaluate(layout | {"runtime.batch_max": b_max, "runtime.max_policy_lag": lag})
    if not seen:
        raise ValueError(f"plan search: no plan fits the machine's memory budget ({machine.memory_gb:g} GB; "
                         f"{refused['memory']} over it, {refused['schema']} refused by the config schema); "
                         "raise it with --machine memory_gb=...")
    best = max(seen.values(), key=lambda c: c.prediction.env_steps_per_s)
    timeouts = (2.0, 5.0, 10.0, 20.0) if batching else (cfg.runtime.batch_timeout_ms,)
    for t_max, threads, inf_threads in itertools.product(timeouts, sorted(costs.learner_step_s),
                                                         sorted(costs.forward_threads_s)):
        evaluate(best.overrides | {"runtime.batch_timeout_ms": t_max, "run.torch_threads": threads,
                                   "runtime.inference_threads": inf_threads})
    return sorted(seen.values(), key=lambda c: -c.prediction.env_steps_per_s)
