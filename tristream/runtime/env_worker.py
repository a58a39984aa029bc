"""EnvWorker (the "simulator"): owns a shard of envs split into groups; each group steps on its own clock.

For each group it sends the active envs' observations to inference, waits for that group's action
chunks, executes them (K env steps per chunk), and cuts trajectories into ``Segment``s that stream to the
learner. Episode boundaries, resets and success are handled here. It never imports torch.
"""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from tristream.runtime.messages import (ActionReply, GroupDone, ObsRequest, RolloutDone, SegmentBatch,
                                        StartRollout, Stop)
from tristream.metrics.trace import Tracer
from tristream.runtime.channels import Empty
from tristream.runtime.shard import episode_seed, noise_key
from tristream.runtime.shm import ShmWriter
from tristream.types import ObsBatch, Segment


@dataclass
class _EnvSlot:
    """Per-env bookkeeping: the current episode and the segment being filled."""

    env: Any
    env_id: int
    obs: dict[str, Any] | None = None
    seed: int = 0
    episodes_left: int = 0
    decisions_left: int = 0  # fixed-horizon rollouts: decisions still to run this global step
    episode_index: int = 0
    episode_return: float = 0.0
    episode_steps: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.episodes_left > 0 and self.decisions_left != 0


class EnvWorker:
    def __init__(self, worker_id: int, groups: dict[int, list[int]], make_env: Callable[[], Any],
                 inbox, inference_inbox, learner_inbox, *, segment_len: int, run_seed: int,
                 group_size: int = 1, shm_tag: str | None = None):
        self.worker_id = worker_id
        self.groups = groups
        self.inbox, self.inference_inbox, self.learner_inbox = inbox, inference_inbox, learner_inbox
        self.segment_len = segment_len
        self.run_seed = run_seed
        self.group_size = group_size
        self.slots = {e: _EnvSlot(make_env(), e) for envs in groups.values() for e in envs}
        self.global_step = -1
        self.min_version = 0
        self.groups_running: set[int] = set()
        self.waiting: dict[int, ObsRequest] = {}  # group -> its request in flight
        self.seq: dict[int, int] = {g: 0 for g in groups}
        self._due: list[tuple[float, int]] = []  # (time, group): requests held back by the latency model
        self.env_steps = 0
        self.tracer = Tracer(f"env_worker{worker_id}")
        self.shm_tag = shm_tag  # images through /dev/shm blocks named shm_tag + worker and group (None: in messages)
        self._shm: dict[int, ShmWriter] = {}

    # --- event loop -----------------------------------------------------------------------------
    def poll(self, timeout: float | None = None) -> bool:
        """Handle one message from the inbox (or send requests whose simulated latency has passed).
        Returns False when told to stop."""
        self._send_due()
        if self._due:
            wait = max(0.0, self._due[0][0] - time.time())
            timeout = wait if timeout is None else min(timeout, wait)
        try:
            msg = self.inbox.get(timeout=timeout)
        except Empty:
            self._send_due()
            return True
        if isinstance(msg, Stop):
            return False
        if isinstance(msg, StartRollout):
            with self.tracer.span("reset"):
                self._start_rollout(msg)
        elif isinstance(msg, ActionReply):
            if self.waiting.get(msg.group_id) is None or self.waiting[msg.group_id].seq != msg.seq:
                return True  # a duplicate, or an answer to a request from before a restart
            del self.waiting[msg.group_id]
            with self.tracer.span("step"):
                self._on_actions(msg)

        else:
            raise TypeError(f"EnvWorker {self.worker_id}: unexpected message {type(msg).__name__}")
        return True

    def run(self) -> None:
        """The role's loop in a process (or actor) of its own: poll until told to stop, then close."""
        try:
            while self.poll():
                pass
        finally:
            self.close()

    def close(self) -> None:
        for slot in self.slots.values():
            slot.env.close()
        for writer in self._shm.values():
            writer.close()

    def unlink_shared_memory(self) -> None:
        for writer in list(self._shm.values()):
            writer.unlink()

    # --- rollout --------------------------------------------------------------------------------
    def _start_rollout(self, msg: StartRollout) -> None:
        self.global_step, self.min_version = msg.global_step, msg.min_version
        for slot in self.slots.values():
            slot.episode_index = 0
            if msg.steps_per_env:  # fixed horizon: an unfinished episode goes on; it ends when the env does
                slot.episodes_left, slot.decisions_left = 1 << 62, msg.steps_per_env
                if slot.obs is None:
                    self._reset(slot)
            else:
                slot.episodes_left, slot.decisions_left = msg.episodes_per_env, -1
                self._reset(slot)
        self.groups_running = set(self.groups)
        for g, envs in self.groups.items():
            self._after_latency(g, [self.slots[e] for e in envs])

    def _reset(self, slot: _EnvSlot) -> None:
        slot.seed = episode_seed(self.run_seed, self.global_step, slot.env_id, slot.episode_index, self.group_size)
        slot.obs = slot.env.reset(seed=slot.seed)
        slot.episode_return, slot.episode_steps, slot.steps = 0.0, 0, []

    def _request(self, group_id: int) -> None:
        active = [e for e in self.groups[group_id] if self.slots[e].active]
        if not active:
            self.groups_running.discard(group_id)
            self.inference_inbox.put(GroupDone(group_id, self.global_step))
            if not self.groups_running:
                self.learner_inbox.put(self.tracer.telemetry(env_steps=self.env_steps))
                self.learner_inbox.put(RolloutDone(self.worker_id, self.global_step))
            return
        obs = ObsBatch.stack([self.slots[e].obs for e in active])
        # images go through the group's shared block (state-only envs have none); the message carries its name
        if self.shm_tag is not None and obs.images.size:
            if group_id not in self._shm:
                self._shm[group_id] = ShmWriter((len(self.groups[group_id]), *obs.images.shape[1:]),
                                                name=f"{self.shm_tag}w{self.worker_id}g{group_id}")
            obs.images = self._shm[group_id].write(obs.images)
        self.seq[group_id] += 1
        keys = [noise_key(self.run_seed, self.global_step, e, self.slots[e].episode_index, self.slots[e].episode_steps)
                for e in active]
        req = ObsRequest(self.worker_id, group_id, self.global_step, active, obs, self.min_version, time.time(),
                         self.seq[group_id], keys)
        self.waiting[group_id] = req
        self.inference_inbox.put(req)

    def _on_actions(self, reply: ActionReply) -> None:
        finished: list[Segment] = []
        for i, env_id in enumerate(reply.env_ids):
            seg = self._execute_chunk(self.slots[env_id], reply.actions[i], reply.logp[i],
                                      float(reply.values[i]), reply.version)
            if seg is not None:
                finished.append(seg)
        if finished:
            self.learner_inbox.put(SegmentBatch(self.worker_id, finished))
        self._after_latency(reply.group_id, [self.slots[e] for e in reply.env_ids])

    def _after_latency(self, group_id: int, slots: list[_EnvSlot]) -> None:
        """Send the group's next request now, or, with the latency model, once its slowest env would have
        finished (a group steps like one vectorised simulator); other groups go on meanwhile."""
        owed = max((slot.env.take_owed() for slot in slots if hasattr(slot.env, "take_owed")), default=0.0)
        if owed > 0:
            heapq.heappush(self._due, (time.time() + owed, group_id))
        else:
            self._request(group_id)

    def has_due(self) -> bool:
        return bool(self._due)

    def _send_due(self) -> None:
        while self._due and self._due[0][0] <= time.time():
            self._request(heapq.heappop(self._due)[1])

    def _execute_chunk(self, slot: _EnvSlot, chunk: np.ndarray, logp: np.ndarray, value: float,
                       version: int) -> Segment | None:
        """Run one action chunk; returns a Segment when one is complete."""
        obs_before, reward, steps = slot.obs, 0.0, 0
        terminated = truncated = False
        info: dict[str, Any] = {}
        for k in range(chunk.shape[0]):
            obs, r, terminated, truncated, info = slot.env.step(chunk[k])
            reward += float(r)
            steps += 1
            if terminated or truncated:
                break
        self.env_steps += steps
        slot.obs = obs
        slot.episode_return += reward
        slot.episode_steps += steps
        slot.steps.append({"obs": obs_before, "action": chunk, "logp": logp, "value": value,
                           "version": version, "reward": reward, "env_steps": steps})
        done = terminated or truncated
        slot.decisions_left -= slot.decisions_left > 0
        rollout_end = slot.decisions_left == 0
        if not done and not rollout_end and len(slot.steps) < self.segment_len:
            return None
        seg = self._make_segment(slot, terminated, truncated, bool(info.get("success", False)))
        seg.rollout_end = rollout_end
        slot.steps = []
        if done:
            slot.episodes_left -= 1
            slot.episode_index += 1
            if slot.active:
                self._reset(slot)
            else:  # the next global step starts a new episode
                slot.obs = None
        return seg

    def _make_segment(self, slot: _EnvSlot, terminated: bool, truncated: bool, success: bool) -> Segment:
        steps = slot.steps
        done = terminated or truncated
        return Segment(
            env_id=slot.env_id,
            episode_seed=slot.seed,
            task=slot.env.task,
            obs=ObsBatch.stack([s["obs"] for s in steps]),
            actions=np.stack([s["action"] for s in steps]).astype(np.float32),
            behaviour_logp=np.stack([s["logp"] for s in steps]).astype(np.float32),
            values=np.array([s["value"] for s in steps], np.float32),
            policy_version=np.array([s["version"] for s in steps], np.int64),
            rewards=np.array([s["reward"] for s in steps], np.float32),
            env_steps=np.array([s["env_steps"] for s in steps], np.int64),
            terminated=terminated,
            truncated=truncated,
            bootstrap_obs=slot.obs,
            episode_done=done,
            episode_return=slot.episode_return if done else 0.0,
            episode_success=success if done else False,
            episode_length=slot.episode_steps if done else 0,
            group_key=(self.global_step, slot.env.task, slot.seed),
            global_step=self.global_step,
        )
