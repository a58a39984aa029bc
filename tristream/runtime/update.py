"""One global step's update: the only way the learner trains, in every mode.

``sync`` and ``async-rollout`` feed the whole step at once (after its rollout); ``async`` feeds segments as
they arrive and trains between messages. The maths is the same because it is defined on the step's
canonical sample order (:mod:`tristream.runtime.stream_order`), not on arrival:

1. **Pass 1** cuts the stream into mini-batches of exactly ``algo.global_batch`` samples, in canonical
   order, as soon as they are ready (GAE: on arrival; GRPO: when the group is complete); a segment that
   straddles a boundary is split there. The rollout's end cuts the rest as a short mini-batch whose samples
   weigh 1/``global_batch`` each, as in a full one.
2. **Passes 2..update_epochs** run once the step is complete: the step's segments in a fresh random order
   (the learner's seeded rng), cut the same way. With ``algo.shuffle=samples`` (per-token losses under
   token-mean) every pass, the first included, draws single samples of the complete step in a fresh random
   order, so a mini-batch holds independent decisions of many envs; pass 1 then waits for the step to be
   complete.
3. Every mini-batch normalises its own advantages (GAE whitened if ``algo.norm_adv``; GRPO with
   ``grpo_std_level=batch`` divided by its std), as CleanRL and Stable-Baselines3 do, so no statistic needs
   the whole step before training starts.
4. GAE bootstraps from the value function as it was when the step's update began: a segment prepared after
   some optimizer steps (streamed) uses a copy of the pre-update policy, as one prepared up front does.
5. Proximal log-probs: the behaviour ones for fresh data; for data of an older version (or a loss whose
   spec says ``proximal="always"``, or rollouts from low-bit weights) those of the policy when the sample
   is first trained, kept for the later passes (``algo.ratio_reference=behaviour``: never recomputed).
6. ``algo.target_kl`` ends the step's passes after a pass whose mean approx KL exceeds it.
7. Then the policy's input statistics take in the step's observations (``Policy.observe``: a running state
   normaliser), and the learner's version goes up by one: weights are published once per global step.

With ``runtime.max_policy_lag=0``, async therefore does exactly what sync does (tests/runtime/test_modes.py).
"""
from __future__ import annotations

import copy
import dataclasses
import zlib
from collections import defaultdict, deque

import numpy as np
import torch

from tristream.algos.registry import loss_spec
from tristream.runtime.learner import Learner, Samples
from tristream.runtime.stream_order import StreamOrder
from tristream.types import ObsBatch, Segment


class StepUpdate:
    def __init__(self, learner: Learner, *, envs=None, episodes_per_env: int = 1, group_size: int = 1,
                 fixed_horizon: bool = False):
        """``envs``: the step's env ids, so that pass 1 can start before the rollout ends (None: at close)."""
        self.learner = learner
        algo = learner.algo
        self.batch_size = algo.global_batch
        self.order = StreamOrder(envs, episodes_per_env=episodes_per_env, group_size=group_size,
                                 by_group=algo.advantage == "grpo", fixed_horizon=fixed_horizon)
        # recomputed on fresh data too: a loss that asks for it, or rollouts from other weights than the learner's
        self._always_proximal = loss_spec(algo.loss).proximal == "always" or learner.tracks_mismatch
        self._recompute_stale = algo.ratio_reference == "proximal"
        self._shuffle_samples = algo.shuffle == "samples"
        self._ready: list[Samples] = []  # prepared, not yet cut into a pass-1 mini-batch
        self._trained: list[Samples] = []  # pass-1 mini-batches, with their proximal log-probs
        self._queue: deque[tuple[Samples, np.ndarray]] = deque()  # (samples, mini-batch indices) to train
        self._step: Samples | None = None  # the whole step, for the passes after the first
        self._rows = 0  # segments prepared so far (the step's row ids)
        self._cut = 0  # samples cut into pass-1 mini-batches so far
        self._pass = 1
        self._pass_kl: list[float] = []
        self.closed = False
        self.dropped_groups = 0
        self.dropped_segments = 0  # segments of those groups: received, not trained
        self._sums: dict[str, float] = defaultdict(float)
        self._steps = 0
        self._checked_budget = False
        self._values_at_start = None  # the pre-update policy, once training starts before every segment is prepared
        self.segment_keys: list[str] = []  # every segment this step trains on (runtime.audit_samples)

    @property
    def optimizer_steps(self) -> int:
        """Optimizer steps taken on this step's data so far."""
        return self._steps

    @property
    def started(self) -> bool:
        """An optimizer step has been taken on this step's data."""
        return self._steps > 0

    @property
    def pending(self) -> bool:
        """An optimizer step can run now."""
        return bool(self._queue) or self._next_pass_ready()

    def add(self, segments: list[Segment]) -> None:
        """Take arriving segments (any order); prepare and cut what the canonical order releases. No training."""
        self.order.add(segments)
        self._take(self.order.release())

    def close(self) -> None:
        """The rollout is over: release everything left (an incomplete GRPO group is dropped: it lost episodes
        to a restarted env worker) and cut the short last mini-batch. Idempotent."""
        if self.closed:
            return
        self.closed = True
        rest = self.order.flush()
        if self.order.by_group:
            done: dict[tuple, int] = defaultdict(int)
            for s in rest:
                done[s.group_key] += bool(s.episode_done)
            group_size = self.order.group_size
            self.dropped_groups = sum(1 for n in done.values() if n < group_size)
            kept = [s for s in rest if done[s.group_key] >= group_size]
            self.dropped_segments = len(rest) - len(kept)
            rest = kept
        self._take(rest)
        self._values_at_start = None  # every segment is prepared
        n = sum(len(r) for r in self._ready)
        self._cut_batches(n, self.learner.rng.permutation(n) if self._shuffle_samples else None)

    def _take(self, segments: list[Segment]) -> None:
        self.segment_keys += [segment_key(s) for s in segments]
        if segments:
            self._ready.append(self.learner.prepare(segments, normalize=False, first_row=self._rows,
                                                    value_policy=self._values_at_start))
            self._rows += len(segments)
        if self._shuffle_samples:  # pass 1 draws from the whole step too: nothing is cut before it is complete
            return
        n = sum(len(r) for r in self._ready)
        self._cut_batches(n - n % self.batch_size)

    def _cut_batches(self, n: int, order: np.ndarray | None = None) -> None:
        """Queue the first ``n`` ready samples (in ``order``, a permutation of all of them, if given) as
        mini-batches of ``batch_size`` (the last may be short); one concatenation for all of them."""
        if n == 0:
            return
        ready = Samples.concat(self._ready) if len(self._ready) > 1 else self._ready[0]
        order = np.arange(n) if order is None else order
        for lo in range(0, n, self.batch_size):
            hi = min(lo + self.batch_size, n)
            self._queue.append((ready.select(order[lo:hi]), np.arange(hi - lo)))
        rest = ready.select(np.arange(n, len(ready)))
        self._ready = [rest] if len(rest) else []
        self._cut += n

    def _next_pass_ready(self) -> bool:
        return (self.closed and not self._queue and not self._ready and self._pass < self.learner.algo.update_epochs
                and self._trained and not self._stopped())

    def _stopped(self) -> bool:
        return bool(self._pass_kl) and self.learner.kl_exceeded(float(np.mean(self._pass_kl)))

    def _start_next_pass(self) -> None:
        """Passes after the first: the whole step, its segments (or, algo.shuffle=samples, its samples)
        shuffled, cut into mini-batches."""
        if self._step is None:
            self._step = step = Samples.concat(self._trained)
        step = self._step
        if self.learner.algo.shuffle == "samples":
            order = self.learner.rng.permutation(len(step))
        else:
            counts = np.bincount(step.row)  # rows are the step's segment ids, each contiguous
            starts = np.r_[0, np.cumsum(counts)[:-1]]
            rows = [r for r in self.learner.rng.permutation(len(counts)) if counts[r]]
            order = np.concatenate([np.arange(starts[r], starts[r] + counts[r]) for r in rows])
        for lo in range(0, len(order), self.batch_size):  # indices into the step: no copies of the images
            self._queue.append((step, order[lo:lo + self.batch_size]))
        self._pass += 1
        self._pass_kl = []

    def train_step(self) -> None:
        """One optimizer step on the next mini-batch."""
        learner = self.learner
        if self._steps == 0 and not self.closed and learner.algo.advantage == "gae":  # segments still to prepare
            self._values_at_start = copy.deepcopy(learner.policy).eval()
        if not self._queue:
            self._start_next_pass()
        batch, idx = self._queue.popleft()
        if self._pass == 1:  # a mini-batch of its own (idx: all of it)
            if self._always_proximal or (self._recompute_stale and (batch.version != learner.version).any()):
                batch.proximal_logp = learner.proximal_logp(batch)  # the policy about to be updated
            self._trained.append(batch)
        # Only the last mini-batch of a pass can be short, and it is cut when the rollout is over: its samples
        # weigh 1/global_batch each, or 1/(the step's samples) when the whole step is shorter.
        full = min(self.batch_size, self._cut)
        advantages = batch.advantages.clone()
        advantages[torch.from_numpy(idx)] = learner.normalize(batch.advantages[torch.from_numpy(idx)])
        stats = learner.optimizer_step(dataclasses.replace(batch, advantages=advantages), idx, full)
        # (with low-bit rollouts the raw ratio is off 1 from the start: the learner's own movement is the KL)
        moved = stats.get("approx_kl", 0.0) != 0.0 if learner.tracks_mismatch else stats.get("raw_ratio_max", 1.0) != 1.0
        if not self._checked_budget and moved:
            self._checked_budget = True  # the step's first optimizer step whose policy has moved from the data's
            learner.check_trust_region(stats)
        for k, v in stats.items():  # "_max" statistics: the step's largest; the rest: means over its optimizer steps
            self._sums[k] = max(self._sums.get(k, v), v) if k.endswith("_max") else self._sums[k] + v
        self._steps += 1
        self._pass_kl.append(stats.get("approx_kl", 0.0))

    def finish(self) -> dict[str, float]:
        """Close, train what is left, bump the version; the step's metrics (means over optimizer steps)."""
        self.close()
        while self.pending:
            self.train_step()
        if self._trained:  # input statistics move after the update, which used those the data were collected with
            step_obs = self._step.obs if self._step is not None else ObsBatch.concat([b.obs for b in self._trained])
            self.learner.policy.observe(step_obs.as_dict())
        self.learner.version += 1
        out = {k: v if k.endswith("_max") else v / max(self._steps, 1) for k, v in self._sums.items()}
        return out | {"optimizer_steps": float(self._steps), "samples": float(self._cut),
                      "update_epochs_run": float(self._pass if self._steps else 0),
                      "dropped_groups": float(self.dropped_groups), "segments_dropped": float(self.dropped_segments)}


def segment_key(s: Segment) -> str:
    """Which samples a segment holds: the rollout's global step, env, episode and a checksum of its actions
    (sampled, so two different segments practically never share it); a segment rolled out again after a
    restart has the same key, so a key trained twice is a sample trained twice."""
    return f"{s.global_step}/{s.env_id}/{s.episode_seed}/{zlib.crc32(s.actions.tobytes()):08x}"


def update_on(learner: Learner, segments: list[Segment]) -> dict[str, float]:
    """Train on one whole global step's segments (what sync and async-rollout do); its metrics."""
    update = StepUpdate(learner)
    update.add(segments)
    return update.finish()
