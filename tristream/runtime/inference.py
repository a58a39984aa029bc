"""InferenceWorker (the "generator"): a policy server with a batcher.

It collects observation requests from env groups into one batch, runs one forward pass, and routes
each group's action chunks back, stamped with the policy version that produced them. Weights arrive in
the same inbox as requests, so a swap can only happen between two batches, never during a forward.

Batching rule: ``batch_max == 0`` is lockstep (the sync baseline): fire when every group that is still
running in the current global step has a request waiting. ``batch_max > 0`` is dynamic batching: fire at
``batch_max`` samples or when the oldest request has waited ``batch_timeout_ms``.
"""
from __future__ import annotations

import inspect
import time
from collections import defaultdict

import numpy as np
import torch

from tristream.metrics.trace import Tracer
from tristream.noise import RowNoise
from tristream.runtime.channels import Empty
from tristream.runtime.messages import ActionReply, GroupDone, ObsRequest, Stop, Weights
from tristream.runtime.shm import ShmReader, ShmRef
from tristream.types import ObsBatch


class InferenceWorker:
    def __init__(self, policy, inbox, env_inboxes: dict, *, num_groups: int, batch_max: int = 0,
                 batch_timeout_ms: float = 5.0, seed: int = 0, deterministic: bool = False,
                 telemetry_inbox=None, telemetry_every_s: float = 0.2):
        self.policy = policy.eval()
        # per-row noise keeps a row's sample independent of its batch; a policy whose act() takes no
        # ``noise`` samples from the worker's private stream instead (then the batch's composition matters)
        self._row_noise = "noise" in inspect.signature(policy.act).parameters
        self.inbox, self.env_inboxes = inbox, env_inboxes
        self.num_groups = num_groups
        self.batch_max, self.batch_timeout_s = batch_max, batch_timeout_ms / 1000.0
        self.deterministic = deterministic
        self.version = -1  # no weights yet: requests wait for the first publication
        self.pending: list[ObsRequest] = []
        self.done_groups: dict[int, set[int]] = defaultdict(set)
        self.seed = seed
        self._rng_state = _seeded_rng_state(seed)
        self._shm = ShmReader()
        self.batch_sizes: list[int] = []
        self.queue_delays: list[float] = []
        self.tracer = Tracer("inference")
        self.telemetry_inbox, self.telemetry_every_s = telemetry_inbox, telemetry_every_s
        self._last_telemetry = time.time()

    def poll(self, timeout: float | None = 0.05) -> bool:
        """Take what the inbox has (waiting up to ``timeout`` for the first message, and no longer than until
        the oldest waiting request's ``batch_timeout_ms``), then serve ready batches. Returns False when told
        to stop."""
        due = self._batch_due()
        if due is not None:  # a waiting batch fires at its T_max, not at the next message
            wait = max(0.0, due - time.time())
            timeout = wait if timeout is None else min(timeout, wait)
        try:
            msg = self.inbox.get(timeout=timeout)
            while True:
                if isinstance(msg, Stop):
                    return False
                self._handle(msg)
                msg = self.inbox.get(timeout=0)
        except Empty:
            pass
        while (batch := self._ready_batch()) is not None:
            with self.tracer.span("forward"):
                self._serve(batch)
        if self.telemetry_inbox is not None and time.time() - self._last_telemetry > self.telemetry_every_s:
            self.flush_telemetry()
        return True

    def flush_telemetry(self) -> None:
        self._last_telemetry = time.time()
        if self.telemetry_inbox is not None and self.tracer.spans:
            sizes, delays = self.batch_sizes, self.queue_delays
            self.batch_sizes, self.queue_delays = [], []
            self.telemetry_inbox.put(self.tracer.telemetry(batch_sizes=sizes, queue_delay_s=delays,
                                                           version=self.version,
                                                           rollout=self.policy.rollout_stats()))

    def run(self) -> None:
        """The role's loop in a process (or actor) of its own: poll until told to stop, then close."""
        try:
            while self.poll(timeout=0.05):
                pass
        finally:
            self.close()

    def close(self) -> None:
        self._shm.close()

    def unlink_shared_memory(self) -> None:
        self._shm.unlink_all()

    def _handle(self, msg) -> None:
        if isinstance(msg, ObsRequest):
            self.pending.append(msg)
        elif isinstance(msg, GroupDone):
            self.done_groups[msg.global_step].add(msg.group_id)
        elif isinstance(msg, Weights):
            if msg.version > self.version:
                self.policy.load_state_dict({k: torch.as_tensor(v) for k, v in msg.state_dict.items()})
                self.version = msg.version
                # Sampling restarts from a seed fixed by the version, so a resumed run samples exactly
                # what an uninterrupted one would, whatever process inference lives in.
                self._rng_state = _seeded_rng_state(self.seed * 1_000_003 + msg.version)
        else:
            raise TypeError(f"InferenceWorker: unexpected message {type(msg).__name__}")

    def _servable(self) -> list[ObsRequest]:
        """Pending requests the current weights may answer."""
        return [r for r in self.pending if r.min_version <= self.version]

    def _batch_due(self) -> float | None:
        """When the dynamic batcher's timeout fires for the oldest servable request (None: nothing waits on it)."""
        sent = [r.sent_at for r in self._servable()] if self.batch_max else []
        return min(sent) + self.batch_timeout_s if sent else None

    def _ready_batch(self) -> list[ObsRequest] | None:
        servable = self._servable()
        if not servable:
            return None
        if self.batch_max == 0:  # lockstep: every running group of the oldest step has asked
            step = min(r.global_step for r in servable)
            batch = sorted((r for r in servable if r.global_step == step), key=lambda r: r.group_id)
            if len(batch) + len(self.done_groups[step]) < self.num_groups:
                return None
        else:
            n = sum(len(r.env_ids) for r in servable)
            waited = time.time() - min(r.sent_at for r in servable)
            if n < self.batch_max and waited < self.batch_timeout_s:
                return None
            batch, n = [], 0
            for r in servable:  # never split a request: a batch may overshoot batch_max
                if n >= self.batch_max:
                    break
                batch.append(r)
                n += len(r.env_ids)
        ids = {id(r) for r in batch}
        self.pending = [r for r in self.pending if id(r) not in ids]
        return batch

    @torch.no_grad()
    def _serve(self, batch: list[ObsRequest]) -> None:
        now = time.time()
        self.queue_delays.extend(now - r.sent_at for r in batch)
        for r in batch:
            if isinstance(r.obs.images, ShmRef):
                r.obs.images = self._shm.read(r.obs.images)
        obs = ObsBatch.concat([r.obs for r in batch])
        kwargs = {}
        if self._row_noise and all(r.noise_keys is not None for r in batch):
            kwargs["noise"] = RowNoise([k for r in batch for k in r.noise_keys])
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng_state)
            out = self.policy.act(obs.as_dict(), deterministic=self.deterministic, **kwargs)
            self._rng_state = torch.get_rng_state()
        actions = out.actions.float().numpy()
        logp = out.logp.float().numpy()
        values = out.value.float().numpy()
        start = 0
        for r in batch:
            n = len(r.env_ids)
            self.env_inboxes[r.worker_id].put(ActionReply(r.group_id, r.env_ids, actions[start:start + n],
                                                          logp[start:start + n], values[start:start + n],
                                                          self.version, r.seq))
            start += n
        self.batch_sizes.append(len(obs))


def _seeded_rng_state(seed: int) -> torch.Tensor:
    """A private torch RNG state, independent of the global stream of whoever shares the process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.get_rng_state()
