"""Admission control: which env worker may start which rollout, given the learner's progress.

Every env worker runs the global steps' rollouts in order. Worker ``w`` may start the rollout of step ``j``
when it is idle, ``j < total_steps`` and the learner has finished step ``j - max_lag - 1``, i.e. the
learner is at step ``>= j - max_lag``. The weights it then acts with are those the learner published
last, at most ``max_lag`` versions older than the version that trains on its samples, so no trained
sample is older than ``max_lag``. With ``max_lag = 0`` no rollout starts before the previous step is
trained: sync's schedule. A pure object (no processes, no clocks), the only admission rule of every mode.
"""
from __future__ import annotations


class Admission:
    def __init__(self, workers: int, *, max_lag: int, start_step: int, total_steps: int):
        if max_lag < 0:
            raise ValueError(f"max_lag must be >= 0, got {max_lag}")
        self.max_lag = max_lag
        self.total_steps = total_steps
        self.next_step = {w: start_step for w in range(workers)}  # the rollout each worker runs next
        self.running: dict[int, int] = {}  # worker -> step of the rollout it runs
        self._done: dict[int, set[int]] = {}  # step -> workers that finished it

    def admit(self, learner_step: int) -> list[tuple[int, int]]:
        """The ``(worker, step)`` rollouts that may start now; they count as running from here."""
        out = []
        for w, j in self.next_step.items():
            if w not in self.running and j < self.total_steps and j - learner_step <= self.max_lag:
                self.running[w] = j
                out.append((w, j))
        return out

    def finished(self, worker: int, step: int) -> bool:
        """Worker ``worker`` sent the last segments of its rollout of ``step``. False (and nothing changes) for
        a rollout it is not running: a message sent before a restart."""
        if self.running.get(worker) != step:
            return False
        del self.running[worker]
        self.next_step[worker] = step + 1
        self._done.setdefault(step, set()).add(worker)
        return True

    def rollout_over(self, step: int) -> bool:
        """Every worker finished its rollout of ``step``."""
        return len(self._done.get(step, ())) == len(self.next_step)

    def forget(self, step: int) -> None:
        """``step`` is trained; its bookkeeping is no longer needed."""
        self._done.pop(step, None)

    def restart(self, step: int) -> None:
        """Every role was restarted: rollouts in flight are gone; every worker starts again at ``step``."""
        self.running.clear()
        self._done = {s: w for s, w in self._done.items() if s < step}
        self.next_step = {w: step for w in self.next_step}
