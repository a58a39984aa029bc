"""Stage costs: what each stage of the pipeline costs on one machine, as ``tristream plan measure`` measured
them (:mod:`tristream.plan.measure`), read by the pipeline model (:mod:`tristream.plan.model`).

A cost file is JSON (``StageCosts.save``); ``tristream plan measure`` prints it as :func:`format_costs`'s table.
It records the workload it was measured on (:data:`WORKLOAD_KEYS`): predicting another workload from it is
an error naming the key.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the config fields a cost file describes; predicting another workload from it is an error
WORKLOAD_KEYS = ("env.name", "env.tasks", "env.image_size", "policy.name", "policy.head", "policy.chunk_len",
                 "algo.advantage", "algo.global_batch", "algo.micro_batch", "rollout.segment_len")


@dataclass
class StageCosts:
    """Measured per-stage costs (seconds unless named otherwise). ``forward_s`` maps a batch size to one
    forward pass; :meth:`forward` interpolates. ``learner_step_s`` maps torch threads to one optimizer step
    on ``global_batch`` samples, ``learner_step_fixed_s`` to the part of a step that does not grow with its
    samples (zeroing, clipping and applying the gradients; from a step on a quarter batch), so a short last
    mini-batch costs what it costs."""

    env_step_s: float  # per env step, resets inside a rollout included
    env_reset_s: float  # per env, at a rollout's start
    episode_steps: list[int]  # env steps per episode, as the configured policy played them; [] if none ended
    forward_s: dict[int, float]  # one thread
    forward_threads_s: dict[int, float]  # threads -> one forward pass on the largest measured batch
    learner_prepare_s: float  # per sample (1 thread)
    learner_step_s: dict[int, float]
    learner_step_fixed_s: dict[int, float]
    learner_proximal_s: float  # per sample of a pass-1 mini-batch that needs proximal log-probs (1 thread)
    segment_pickle_s: float  # per sample, in the env worker
    segment_unpickle_s: float  # per sample, in the learner
    segment_bytes: float  # per sample
    message_s: float  # one small message (request, reply, notice), sender and receiver together
    publish_s: float  # the learner's side of one weight publication
    load_s: float  # the inference worker's side
    weight_bytes: int
    serve_overhead_s: float  # per inference batch beyond the forward: gathering requests, replying
    learner_update_scale: float  # a whole update's optimizer steps over the sum of single steps (reshuffles, copies)
    corun_slowdown: dict[int, float]  # busy cores -> how much slower each runs CPU-bound work than one alone
    env_mb: float  # resident memory per env
    process_mb: float  # an env worker process before its envs
    inference_mb: float  # a process with torch and the policy
    learner_mb: float  # the same with the optimizer state and a step's samples
    global_batch: int
    workload: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def forward(self, n: int) -> float:
        """One forward pass on ``n`` samples (:func:`interpolate` over the measured sizes)."""
        return interpolate(self.forward_s, n)

    def forward_speedup(self, threads: int) -> float:
        """How much faster a forward pass runs on ``threads`` threads than on one (the nearest measured count)."""
        t = max((k for k in self.forward_threads_s if k <= threads), default=1)
        return self.forward_threads_s.get(1, 1.0) / self.forward_threads_s.get(t, self.forward_threads_s.get(1, 1.0))

    def learner_step(self, samples: int, threads: int) -> float:
        """One optimizer step on ``samples`` samples at ``threads`` torch threads (the nearest measured count at
        or below it): its fixed part plus the per-sample part."""
        t = max((k for k in self.learner_step_s if k <= threads), default=min(self.learner_step_s))
        return step_cost(self.learner_step_s[t], self.learner_step_fixed_s.get(t, 0.0), samples, self.global_batch)

    def slowdown(self, busy: int) -> float:
        """How much slower a core runs while ``busy`` cores work (linear between the measured counts)."""
        counts = sorted(self.corun_slowdown)
        if not counts or busy <= counts[0]:
            return self.corun_slowdown.get(counts[0], 1.0) if counts else 1.0
        for lo, hi in zip(counts, counts[1:]):
            if busy <= hi:
                f = (busy - lo) / (hi - lo)
                return self.corun_slowdown[lo] + f * (self.corun_slowdown[hi] - self.corun_slowdown[lo])
        return self.corun_slowdown[counts[-1]]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    INT_KEYED = ("forward_s", "forward_threads_s", "learner_step_s", "learner_step_fixed_s", "corun_slowdown")

    @classmethod
    def from_json(cls, d: dict, source: str = "cost file") -> "StageCosts":
        if not isinstance(d, dict):
            raise ValueError(f"{source}: not a cost file (write it with `tristream plan measure`)")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - set(d) - {"workload", "meta"})
        if missing:
            raise ValueError(f"{source}: missing {', '.join(missing)} (write it with `tristream plan measure`)")
        d = {k: v for k, v in d.items() if k in names}
        try:
            for key in cls.INT_KEYED:
                d[key] = {int(k): float(v) for k, v in d[key].items()}
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"{source}: {key} must map counts to seconds, got {d[key]!r}") from None
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> "StageCosts":
        from tristream.provenance import read_json
        data = read_json(path, "cost file", "write it with `tristream plan measure --out ...`")
        return cls.from_json(data, f"cost file {path}")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"benchmark": "plan_costs", **self.to_json()}, indent=2))
        return path


def interpolate(table: dict[int, float], n: int) -> float:
    """``table`` (size -> seconds) at ``n``: linear between the measured sizes, extrapolated from the nearest
    two beyond them."""
    if n in table:
        return table[n]
    sizes = sorted(table)
    if len(sizes) == 1:
        return table[sizes[0]] * n / sizes[0]
    if n < sizes[0]:
        lo, hi = sizes[0], sizes[1]
    elif n > sizes[-1]:
        lo, hi = sizes[-2], sizes[-1]
    else:
        lo, hi = max(s for s in sizes if s < n), min(s for s in sizes if s > n)
    return max(0.0, table[lo] + (table[hi] - table[lo]) / (hi - lo) * (n - lo))


def step_cost(full_s: float, fixed_s: float, samples: int, global_batch: int) -> float:
    """An optimizer step on ``samples`` samples, from one on ``global_batch`` samples (``full_s``) of which
    ``fixed_s`` does not grow with the samples."""
    fixed = min(fixed_s, full_s)
    return fixed + (full_s - fixed) * samples / global_batch


def config_value(cfg, key: str) -> Any:
    """The value of a dotted key (``runtime.env_workers``) in a config."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def workload_of(cfg) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, (list, tuple)) else v for k in WORKLOAD_KEYS
            for v in [config_value(cfg, k)]}


def check_workload(costs: StageCosts, cfg) -> None:
    """The config must describe the workload the costs were measured on (where the costs say which)."""
    want = workload_of(cfg)
    bad = [f"{k}={want[k]!r} (measured with {costs.workload[k]!r})" for k in want
           if k in costs.workload and costs.workload[k] != want[k]]
    if bad:
        raise ValueError("the cost file was measured on another workload: " + ", ".join(bad)
                         + "; measure this one with `tristream plan measure` and the same overrides")


def format_costs(c: StageCosts) -> str:
    """The cost file as a table."""
    rows = [
        ("env step", f"{1e3 * c.env_step_s:.3f} ms", "per env step, CPU"),
        ("env reset", f"{1e3 * c.env_reset_s:.2f} ms", "per env"),
        ("episode length", f"{statistics.mean(c.episode_steps):.1f} env steps" if c.episode_steps else "-",
         f"mean of {len(c.episode_steps)} (min {min(c.episode_steps)}, max {max(c.episode_steps)})"
         if c.episode_steps else "no episode ended within the probe's rollout"),
        *[(f"forward, batch {n}", f"{1e3 * s:.2f} ms", f"{1e3 * s / n:.3f} ms per sample") for n, s in
          sorted(c.forward_s.items())],
        *[(f"forward, {k} threads", f"{1e3 * s:.2f} ms", f"batch {max(c.forward_s)}") for k, s in
          sorted(c.forward_threads_s.items()) if k > 1],
        ("learner prepare", f"{1e3 * c.learner_prepare_s:.3f} ms", "per sample (advantages, stacking)"),
        *[(f"optimizer step, {k} thread(s)", f"{s:.3f} s",
           f"{c.global_batch} samples; {c.learner_step_fixed_s.get(k, 0.0):.3f} s of it per step, whatever its size")
          for k, s in sorted(c.learner_step_s.items())],
        ("inference worker", f"{1e3 * c.serve_overhead_s:.2f} ms", "per batch beyond the forward pass"),
        ("whole update", f"{c.learner_update_scale:.2f}x", "the sum of its optimizer steps (pass reshuffles, copies)"),
        *[(f"{k} cores busy", f"{v:.2f}x", "slower per core than one alone")
          for k, v in sorted(c.corun_slowdown.items())],
        ("proximal log-probs", f"{1e3 * c.learner_proximal_s:.3f} ms", "per sample of a mini-batch that needs them"),
        ("segment transfer", f"{1e6 * (c.segment_pickle_s + c.segment_unpickle_s):.0f} us",
         f"per sample, {c.segment_bytes / 1024:.0f} kB"),
        ("message", f"{1e6 * c.message_s:.0f} us", "through a multiprocessing queue"),
        ("weight publication", f"{1e3 * (c.publish_s + c.load_s):.1f} ms", f"{c.weight_bytes / 2**20:.1f} MB"),
        ("memory per env", f"{c.env_mb:.0f} MB", "resident"),
        ("env worker process", f"{c.process_mb:.0f} MB", "before its envs"),
        ("inference process", f"{c.inference_mb:.0f} MB", f"learner {c.learner_mb:.0f} MB"),
    ]
    w = max(len(r[0]) for r in rows) + 2
    return "\n".join(f"{a:<{w}}{b:>16}  {c_}" for a, b, c_ in rows)
