"""Pipeline tracing: every role records what it was busy with, as (name, start, end) spans.

Spans travel to the learner as ``Telemetry`` messages (env workers with each RolloutDone, inference every
half second); ``chrome_trace`` turns them into Chrome trace JSON, which https://ui.perfetto.dev opens,
and ``plots.timeline`` draws one row per role. Recording a span is two clock reads and one append.
"""
from __future__ import annotations

import json
import os
import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


@dataclass
class Telemetry:
    """Any role -> learner: busy spans (name, start, end in time.time() seconds) and counters."""

    role: str
    pid: int
    spans: list[tuple[str, float, float]]
    stats: dict[str, float] = field(default_factory=dict)


class Tracer:
    def __init__(self, role: str):
        self.role = role
        self.spans: list[tuple[str, float, float]] = []
        self.busy_s = 0.0

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        t0 = time.time()
        try:
            yield
        finally:
            t1 = time.time()
            self.spans.append((name, t0, t1))
            self.busy_s += t1 - t0

    def telemetry(self, **stats: float) -> Telemetry:
        """Hand over the spans recorded so far, with this process's peak memory, CPU seconds (all its
        threads, a backend's own included) at wall time ``t``, and counters."""
        spans, self.spans = self.spans, []
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        return Telemetry(self.role, os.getpid(), spans, {"busy_s": self.busy_s, "peak_rss_mb": peak_mb,
                                                         "cpu_s": time.process_time(), "t": time.time(), **stats})


def chrome_trace(telemetry: list[Telemetry], path: str | Path, t_start: float | None = None) -> Path:
    """Write the spans as Chrome trace events (one process row per role)."""
    t_start = t_start if t_start is not None else min((s[1] for t in telemetry for s in t.spans), default=0.0)
    events, pids = [], {}
    for t in telemetry:
        pid = pids.setdefault(t.role, len(pids) + 1)
        for name, t0, t1 in t.spans:
            events.append({"name": name, "cat": t.role, "ph": "X", "pid": pid, "tid": 0,
                           "ts": round((t0 - t_start) * 1e6, 1), "dur": round((t1 - t0) * 1e6, 1)})
    for role, pid in pids.items():
        events.append({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": role}})
    path = Path(path)
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}))
    return path
