"""What every backend offers the pipeline, whatever process the roles live in, and the one fault policy.

A backend gets the run's :class:`~tristream.runtime.topology.Topology` (the roles and their connections) and
decides only where each role lives and what carries its inbox. The pipeline talks to it through five
methods: ``send_inference`` (weights), ``send_env_worker`` (start a rollout), ``learner_get`` /
``learner_poll`` (the learner's next message; telemetry is kept aside in ``telemetry``) and ``close``.
"""
from __future__ import annotations

import json
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path

from tristream.runtime.messages import RoleRestarted, StartRollout, Weights
from tristream.runtime.telemetry import TelemetrySink
from tristream.runtime.topology import RoleId, Topology


def write_roles_file(run_dir, pids: dict[str, int]) -> None:
    """``<run>/roles.json``: the pid of every role process (and of the learner's), rewritten atomically on
    every (re)start, for operators and ``bench chaos``. Nothing is written outside a run directory (a
    benchmark's throwaway config)."""
    path = Path(run_dir) / "roles.json"
    if not path.parent.is_dir():
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(pids))
    os.replace(tmp, path)


class RestartsExhausted(RuntimeError):
    """A role failed more than ``runtime.max_restarts`` times: the run stops. ``step_intact`` is set by the
    pipeline: the number of completed global steps when the learner had not yet trained on the step in
    progress (its state is then exactly that of the last completed step, safe to checkpoint), else None."""

    step_intact: int | None = None


class RestartPolicy:
    """When a role fails (raises, or its process or actor dies) every role is replaced, not just the failed
    one: a process killed while writing to a shared queue can leave it locked for good, and the survivors
    hold requests and segments of the lost rollout, which the pipeline reruns (or closes) from scratch.
    Each role may fail ``max_restarts`` times (``runtime.max_restarts``); one more ends the run.

    A role that fails again within ``storm_window_s`` of its previous failure is in a restart storm (a broken
    env, a full disk): each further restart waits twice as long as the one before, from ``backoff_s`` up to
    ``max_backoff_s``, instead of spinning the machine through process starts."""

    def __init__(self, max_restarts: int, *, backoff_s: float = 1.0, max_backoff_s: float = 30.0,
                 storm_window_s: float = 30.0, clock=time.monotonic):
        self.max_restarts = max_restarts
        self.backoff_s, self.max_backoff_s, self.storm_window_s = backoff_s, max_backoff_s, storm_window_s
        self.clock = clock
        self.counts: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self._storm: dict[str, int] = {}  # failures in a row, each within storm_window_s of the previous

    def failed(self, role: RoleId, reason: str, where: str = "") -> RoleRestarted:
        """Count a failure of ``role``; raises :class:`RestartsExhausted` past the limit, else announces the
        restart (and its back-off, :meth:`backoff`)."""
        name = f"{role} ({where})" if where else str(role)
        n = self.counts[role] = self.counts.get(role, 0) + 1
        now = self.clock()
        recent = role in self._last and now - self._last[role] < self.storm_window_s
        self._storm[role] = self._storm.get(role, 0) + 1 if recent else 1
        self._last[role] = now
        if n > self.max_restarts:
            raise RestartsExhausted(f"{name} failed {n} times (runtime.max_restarts={self.max_restarts}); "
                                    f"last failure: {reason}")
        last_line = (reason.strip().splitlines() or ["no reason given"])[-1]
        wait = self.backoff(role)
        print(f"[tristream] {name} failed ({last_line}); restarting every role "
              f"(restart {n} of at most {self.max_restarts} for {role})"
              + (f" in {wait:.1f} s: it failed again within {self.storm_window_s:.0f} s" if wait else ""), flush=True)
        return RoleRestarted(role, reason)

    def backoff(self, role: RoleId) -> float:
        """Seconds to wait before restarting after ``role``'s latest failure: 0 for a first failure (or one
        long after the previous), then backoff_s, 2 x backoff_s, ... up to max_backoff_s."""
        streak = self._storm.get(role, 0)
        return 0.0 if streak < 2 else min(self.max_backoff_s, self.backoff_s * 2 ** (streak - 2))


class Backend(ABC):
    topology: Topology
    telemetry: TelemetrySink
    restart_policy: RestartPolicy | None = None  # None: a failure propagates (the serial backend)

    @abstractmethod
    def send_inference(self, msg: Weights) -> None:
        """Deliver to the inference worker's inbox."""

    @abstractmethod
    def send_env_worker(self, worker: int, msg: StartRollout) -> None:
        """Deliver to env worker ``worker``'s inbox."""

    @abstractmethod
    def learner_get(self, timeout: float) -> object:
        """The learner's next message (telemetry is taken into ``telemetry`` instead); a failed role comes
        back as the ``RoleRestarted`` of :meth:`role_failed`. Raises ``TimeoutError`` after ``timeout``;
        ``timeout=0`` must not wait."""

    @abstractmethod
    def close(self) -> None:
        """Stop every role and release what the backend holds."""

    def replace_roles(self) -> None:
        """Stop every role and start them all again (backends whose roles can fail on their own)."""
        raise NotImplementedError

    def where(self, role: RoleId) -> str:
        """Where ``role`` runs, for messages ("" when it says nothing the role name does not)."""
        return ""

    def role_failed(self, role: RoleId, reason: str) -> RoleRestarted:
        """The one fault rule of every backend: count (or give up), replace every role, tell the pipeline."""
        where = self.where(role)
        msg = self.restart_policy.failed(role, reason, where)
        time.sleep(self.restart_policy.backoff(role))
        try:
            self.replace_roles()
        except (ValueError, RuntimeError) as e:  # e.g. the node the role needs is gone (a placement error)
            raise RuntimeError(f"{role}{f' ({where})' if where else ''} failed and the roles cannot be started "
                               f"again: {e}") from e
        return msg

    def learner_poll(self) -> object | None:
        """The next message for the learner if one is there now, else None (never waits; the serial
        backend pumps its roles until one has a message or none can move)."""
        try:
            return self.learner_get(timeout=0.0)
        except TimeoutError:
            return None

    def send_env_workers(self, msg) -> None:
        for w in range(self.topology.plan.env_workers):
            self.send_env_worker(w, msg)

    def drain(self, seconds: float) -> None:
        """Keep taking telemetry for ``seconds`` (what roles sent just before a measured window closed)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.telemetry.take(self.learner_get(timeout=max(0.01, deadline - time.monotonic())))
            except (TimeoutError, RuntimeError):
                return
