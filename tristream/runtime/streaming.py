"""Streamed learning: train on a global step's segments while the rest of its rollout is still running.

Segments become *ready* when their advantages can be computed: on arrival for GAE (each segment carries
its bootstrap observation), when the whole episode group is in for GRPO (a group = ``rollout.group_size``
episodes from the same initial state). Every ``algo.global_batch`` ready samples form a batch, trained
``algo.update_epochs`` times, one optimizer step each (GAE advantages, and GRPO's with
``grpo_std_level=batch``, normalised over that batch; ``algo.target_kl`` ends a batch's passes early).
``add`` only prepares and queues; ``train_step`` runs one optimizer step, so the caller can answer its
roles between steps instead of sitting in a long training block. ``close`` (the rollout is complete)
queues what is left as a short batch whose samples weigh 1/``global_batch`` each, as in a full one;
``finish`` trains whatever is still queued, then the learner's version goes up by one: weights are
published once per global step, as in RL-VLA^3's fully asynchronous mode, so a step's data are those of
``sync`` and only the order of the mini-batches differs.
"""
from __future__ import annotations

from collections import defaultdict, deque

import numpy as np

from tristream.runtime.learner import Learner, Samples
from tristream.types import Segment


class StreamingUpdate:
    def __init__(self, learner: Learner, group_size: int):
        self.learner = learner
        self.group_size = group_size
        self._waiting: dict[tuple, list[Segment]] = defaultdict(list)  # GRPO groups not complete yet
        self._episodes_done: dict[tuple, int] = defaultdict(int)
        self._ready: list[Samples] = []  # prepared, not yet cut into a batch
        self._queue: deque[tuple[Samples, int]] = deque()  # (batch, full batch size) waiting to be trained
        self._current: Samples | None = None  # the batch being trained, and its passes so far
        self._current_full = self._passes = 0
        self._cut = 0  # samples cut into batches so far
        self.closed = False
        self.dropped_groups = 0
        self._sums: dict[str, float] = defaultdict(float)
        self._steps = 0
        self._epochs = self._batches = 0  # passes run (algo.target_kl may cut them short) and batches trained
        self.samples = 0

    @property
    def pending(self) -> bool:
        """An optimizer step is waiting to be run."""
        return self._current is not None or bool(self._queue)

    def add(self, segments: list[Segment]) -> None:
        """Prepare arriving segments (advantages) and queue every full global batch; no training."""
        if self.learner.algo.advantage == "gae":
            self._ready.append(self.learner.prepare(segments, normalize=False))
        else:
            complete = []
            for s in segments:
                self._waiting[s.group_key].append(s)
                self._episodes_done[s.group_key] += s.episode_done
                if self._episodes_done[s.group_key] == self.group_size:
                    complete += self._waiting.pop(s.group_key)
            if complete:
                self._ready.append(self.learner.prepare(complete, normalize=False))  # per batch below
        while sum(len(r) for r in self._ready) >= self.learner.algo.global_batch:
            self._cut_batch(self.learner.algo.global_batch)

    def close(self) -> None:
        """The rollout is complete: queue the leftovers as a short last batch (idempotent)."""
        if self.closed:
            return
        self.closed = True
        # Episodic rollouts close every group; a group still open lost episodes to a restarted env worker
        # and is dropped rather than trained on half its episodes.
        self.dropped_groups = len(self._waiting)
        self._waiting.clear()
        if self._ready:
            self._cut_batch(sum(len(r) for r in self._ready))

    def train_step(self) -> None:
        """One optimizer step: the next pass over the current batch (starting the next queued one)."""
        learner = self.learner
        if self._current is None:
            batch, self._current_full = self._queue.popleft()
            batch.advantages = learner.normalize(batch.advantages)
            if (batch.version != learner.version).any():
                # Stale samples: the proximal policy is the one about to be updated.
                batch.proximal_logp = learner.proximal_logp(batch)
            self._current, self._passes = batch, 0
        learner.policy.train()
        batch = self._current
        stats = learner.optimizer_step(batch, np.arange(len(batch)), self._current_full)
        for k, v in stats.items():
            self._sums[k] += v
        self._steps += 1
        self._epochs += 1
        self._passes += 1
        if self._passes == learner.algo.update_epochs or learner.kl_exceeded(stats.get("approx_kl", 0.0)):
            self._current = None
            self._batches += 1
            self.samples += len(batch)

    def finish(self) -> dict[str, float]:
        """Close, train what is still queued, bump the version, return the step's metrics."""
        self.close()
        while self.pending:
            self.train_step()
        self.learner.version += 1
        out = {k: v / max(self._steps, 1) for k, v in self._sums.items()}
        return out | {"optimizer_steps": float(self._steps), "samples": float(self.samples),
                      "update_epochs_run": self._epochs / max(self._batches, 1),
                      "dropped_groups": float(self.dropped_groups)}

    def _cut_batch(self, n: int) -> None:
        ready = Samples.concat(self._ready)
        batch, rest = ready.select(np.arange(n)), ready.select(np.arange(n, len(ready)))
        self._ready = [rest] if len(rest) else []
        self._cut += n
        # A short last batch weighs its samples as a full one does (as in sync), unless the whole step is short.
        self._queue.append((batch, min(self.learner.algo.global_batch, self._cut)))
