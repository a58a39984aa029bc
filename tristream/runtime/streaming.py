"""Streamed learning: train on a global step's segments while the rest of its rollout is still running.

Segments become *ready* when their advantages can be computed: on arrival for GAE (each segment carries
its bootstrap observation), when the whole episode group is in for GRPO (a group = ``rollout.group_size``
episodes from the same initial state). Every time ``algo.global_batch`` ready samples are waiting, they are
trained ``algo.update_epochs`` times, one optimizer step each (GAE advantages, and GRPO's with
``grpo_std_level=batch``, normalised over that batch;
``algo.target_kl`` ends a batch's passes early).
``finish`` trains what is left when the rollout is complete (a short batch whose samples weigh
1/``global_batch`` each, as in a full one), then the learner's version goes up by one:
weights are published once per global step, as in RL-VLA^3's fully asynchronous mode, so a step's data are
those of ``sync`` and only the order of the mini-batches differs.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from tristream.runtime.learner import Learner, Samples
from tristream.types import Segment


class StreamingUpdate:
    def __init__(self, learner: Learner, group_size: int):
        self.learner = learner
        self.group_size = group_size
        self._waiting: dict[tuple, list[Segment]] = defaultdict(list)  # GRPO groups not complete yet
        self._episodes_done: dict[tuple, int] = defaultdict(int)
        self._ready: list[Samples] = []
        self._sums: dict[str, float] = defaultdict(float)
        self._steps = 0
        self._epochs = self._batches = 0  # passes run (algo.target_kl may cut them short) and batches trained
        self.samples = 0

    def add(self, segments: list[Segment]) -> None:
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
                self._ready.append(self.learner.prepare(complete, normalize=False))  # per batch in _train
        while sum(len(r) for r in self._ready) >= self.learner.algo.global_batch:
            self._train(self.learner.algo.global_batch)

    def finish(self) -> dict[str, float]:
        """Train the leftovers (a short last mini-batch), bump the version, return the step's metrics."""
        # Episodic rollouts close every group; a group still open lost episodes to a restarted env worker
        # and is dropped rather than trained on half its episodes.
        self.dropped_groups = len(self._waiting)
        self._waiting.clear()
        if self._ready:
            self._train(sum(len(r) for r in self._ready))
        self.learner.version += 1
        out = {k: v / max(self._steps, 1) for k, v in self._sums.items()}
        return out | {"optimizer_steps": float(self._steps), "samples": float(self.samples),
                      "update_epochs_run": self._epochs / max(self._batches, 1),
                      "dropped_groups": float(self.dropped_groups)}

    def _train(self, n: int) -> None:
        ready = Samples.concat(self._ready)
        batch, rest = ready.select(np.arange(n)), ready.select(np.arange(n, len(ready)))
        self._ready = [rest] if len(rest) else []
        batch.advantages = self.learner.normalize(batch.advantages)
        if (batch.version != self.learner.version).any():
            # Stale samples: the proximal policy is the one about to be updated.
            batch.proximal_logp = self.learner.proximal_logp(batch)
        self.learner.policy.train()
        idx = np.arange(len(batch))
        # A short last batch weighs its samples as a full one does (as in sync), unless the whole step is short.
        full = min(self.learner.algo.global_batch, self.samples + n)
        for _ in range(self.learner.algo.update_epochs):
            stats = self.learner.optimizer_step(batch, idx, full)
            for k, v in stats.items():
                self._sums[k] += v
            self._steps += 1
            self._epochs += 1
            if self.learner.kl_exceeded(stats.get("approx_kl", 0.0)):
                break
        self._batches += 1
        self.samples += n
