"""The canonical order of a global step's segments, released as soon as it is known.

Arrival order depends on process timing and on how inference batched the requests; the order in which a
step's samples are cut into mini-batches must not, or sync and async would train on other mini-batches.
Each env's own segments arrive in order, so the canonical order is defined per env and released as a
prefix once nothing earlier can still arrive:

- GAE (advantages on arrival): time-major, ``(k, env_id)`` with ``k`` the segment's index in its env's
  stream this step, so every mini-batch holds segments of many envs. Segment ``(k, e)`` is released once
  every env before it has sent its ``k``-th segment or finished the step.
- GRPO (advantages need the whole group): group-major, groups in order ``(episode index, env_id //
  group_size)`` (the envs that share an initial state, as the env workers seed them), each released once it
  and every group before it are complete; inside a group ``(env_id, k)``.

Streamed learning therefore waits for the slowest env (GAE) or the slowest earlier group (GRPO) before it
cuts a mini-batch; sync feeds the whole step and gets the same order.
"""
from __future__ import annotations

from collections import defaultdict

from tristream.types import Segment


class StreamOrder:
    def __init__(self, envs=None, *, episodes_per_env: int = 1, group_size: int = 1, by_group: bool = False,
                 fixed_horizon: bool = False):
        """``envs``: the env ids of the step (None: unknown, nothing is released before :meth:`flush`).
        ``fixed_horizon`` (rollout.steps_per_env > 0): an env is finished with the step when its segment marked
        ``rollout_end`` arrives, not after ``episodes_per_env`` episodes."""
        if fixed_horizon and by_group:
            raise ValueError("fixed-horizon rollouts cut episodes, so they cannot be ordered by GRPO group")
        self.envs = None if envs is None else sorted(envs)
        self.episodes_per_env = episodes_per_env
        self.fixed_horizon = fixed_horizon
        self._ended: set[int] = set()  # fixed horizon: envs whose last segment of the step arrived
        self.group_size = group_size
        self.by_group = by_group
        self._segs: dict[int, list[tuple[int, Segment]]] = defaultdict(list)  # env -> [(episode, segment)]
        self._episodes: dict[int, int] = defaultdict(int)  # env -> episodes finished
        self._k = self._pos = 0  # GAE cursor: next (k, envs[pos]) to release
        self._group = 0  # GRPO cursor: index of the next group in canonical order
        self._group_list = [] if envs is None else self._groups()
        self._done: set[int] = set()  # ids of the segments released so far

    def add(self, segments: list[Segment]) -> None:
        for s in segments:
            self._segs[s.env_id].append((self._episodes[s.env_id], s))
            self._episodes[s.env_id] += bool(s.episode_done)
            if s.rollout_end:
                self._ended.add(s.env_id)

    def _finished(self, env: int) -> bool:
        if self.fixed_horizon:
            return env in self._ended
        return self._episodes[env] >= self.episodes_per_env

    def release(self) -> list[Segment]:
        """The segments whose place in the canonical order is now known, in that order (each once)."""
        if self.envs is None:
            return []
        out = self._release_groups() if self.by_group else self._release_time_major()
        self._done |= {id(s) for s in out}
        return out

    def _release_time_major(self) -> list[Segment]:
        out = []
        while True:
            if self._pos == len(self.envs):
                if all(self._finished(e) and len(self._segs[e]) <= self._k + 1 for e in self.envs):
                    return out  # the step is over
                self._k, self._pos = self._k + 1, 0
            env = self.envs[self._pos]
            if len(self._segs[env]) > self._k:
                out.append(self._segs[env][self._k][1])
            elif not self._finished(env):
                return out  # env's k-th segment is still to come
            self._pos += 1

    def _groups(self) -> list[tuple[int, list[int]]]:
        blocks = sorted({e // self.group_size for e in self.envs})
        members = {b: [e for e in self.envs if e // self.group_size == b] for b in blocks}
        return [(ep, members[b]) for ep in range(self.episodes_per_env) for b in blocks]

    def _release_groups(self) -> list[Segment]:
        out, groups = [], self._group_list
        while self._group < len(groups):
            ep, members = groups[self._group]
            if not all(self._episodes[e] > ep for e in members):
                break
            for e in members:
                out += [s for i, s in self._segs[e] if i == ep]
            self._group += 1
        return out

    def flush(self) -> list[Segment]:
        """Everything not yet released (the rollout is over or was lost), in canonical order."""
        out = self.release()
        done = self._done | {id(s) for s in out}
        rest = [(ep, k, env, s) for env, segs in self._segs.items() for k, (ep, s) in enumerate(segs)
                if id(s) not in done]
        if self.by_group:
            rest.sort(key=lambda r: (r[0], r[2] // self.group_size, r[2], r[1]))
        else:
            rest.sort(key=lambda r: (r[1], r[2]))
        self._segs.clear()
        self._ended.clear()
        self._done = set()
        return out + [r[3] for r in rest]
