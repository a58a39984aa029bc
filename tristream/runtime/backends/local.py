"""Local backend: each EnvWorker and the InferenceWorker in its own process; the learner in this one.

Processes start with the ``spawn`` method (no inherited OpenMP or GL state). Children ignore SIGINT:
the main process owns shutdown, so Ctrl-C always ends in a checkpoint and a clean stop.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
import traceback
from pathlib import Path

from tristream.runtime.backends.base import Backend, RestartPolicy, write_roles_file
from tristream.runtime.channels import ProcessChannel, ThreadedReader
from tristream.runtime.messages import RoleError, Stop
from tristream.runtime.roles import Inboxes, build_role
from tristream.runtime.shm import block_tag, remove_stale_blocks
from tristream.runtime.telemetry import TelemetrySink
from tristream.runtime.topology import INFERENCE, RoleId


def _role_main(role: RoleId, cfg, topology, inboxes: Inboxes, env_spec, policy_spec, shm_tag: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        build_role(role, cfg, topology, inboxes, env_spec=env_spec, policy_spec=policy_spec, shm_tag=shm_tag,
                   own_process=True).run()
    except Exception:
        inboxes.learner.put(RoleError(role, traceback.format_exc(), os.getpid()))


class LocalBackend(Backend):
    def __init__(self, cfg, topology, env_spec, policy_spec=None):
        self.cfg, self.topology, self.env_spec, self.policy_spec = cfg, topology, env_spec, policy_spec
        self.ctx = mp.get_context("spawn")
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # env workers need no BLAS threads
        self.restart_policy = RestartPolicy(cfg.runtime.max_restarts)
        self.telemetry = TelemetrySink()
        run_dir = Path(cfg.run.dir) / cfg.run.name
        stale = remove_stale_blocks(run_dir)  # image blocks of an earlier run here that was killed outright
        if stale:
            print(f"[tristream] removed {len(stale)} shared-memory blocks left in /dev/shm by an earlier run in "
                  f"{run_dir}", flush=True)
        self.shm_tag = block_tag(run_dir)
        self.run_dir = run_dir
        self._start_all()

    def _start_all(self) -> None:
        t = self.topology
        self.learner_inbox = ProcessChannel(self.ctx, maxsize=t.learner_inbox_size)
        self.learner_reader = ThreadedReader(self.learner_inbox)  # reads that always time out (see its doc)
        self.inboxes = {role: ProcessChannel(self.ctx, maxsize=t.role_inbox_size) for role in t.roles}
        env_inboxes = {r.index: self.inboxes[r] for r in t.env_workers}
        self.procs: dict[RoleId, mp.Process] = {}
        self._stopped_since: dict[RoleId, float] = {}
        for role in t.roles:
            inboxes = Inboxes(self.inboxes[role], self.inboxes[INFERENCE], env_inboxes, self.learner_inbox)
            self.procs[role] = self.ctx.Process(target=_role_main, name=f"tristream-{role}", daemon=True,
                                                args=(role, self.cfg, t, inboxes, self.env_spec, self.policy_spec,
                                                      self.shm_tag))
            self.procs[role].start()
        write_roles_file(self.run_dir, {"driver": os.getpid(), **{str(r): p.pid for r, p in self.procs.items()}})

    def replace_roles(self) -> None:
        self._kill_all()
        self._start_all()

    def _kill_all(self) -> None:
        for p in self.procs.values():
            if p.is_alive():
                p.kill()
        for p in self.procs.values():
            p.join(timeout=5.0)
        for ch in [self.learner_reader, *self.inboxes.values()]:
            ch.abandon()

    def send_inference(self, msg) -> None:
        self.inboxes[INFERENCE].put(msg, timeout=self.cfg.runtime.timeout_s)

    def send_env_worker(self, worker: int, msg) -> None:
        self.inboxes[RoleId.env_worker(worker)].put(msg, timeout=self.cfg.runtime.timeout_s)

    def learner_get(self, timeout: float) -> object:
        """The learner's next message. Roles are checked for death at least twice a second and the timeout
        counts from the last message that was not telemetry: live roles send telemetry several times a second,
        so an inbox that is never empty must not hide a dead role or a stalled run."""
        deadline = time.monotonic() + timeout
        checked = time.monotonic()
        while True:
            try:
                msg = self.learner_reader.get(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                msg = None
            if isinstance(msg, RoleError):
                if msg.pid == self.procs[msg.role].pid:  # else that process was already found dead and replaced
                    return self.role_failed(msg.role, msg.traceback)
            elif msg is not None and not self.telemetry.take(msg):
                return msg
            now = time.monotonic()
            if msg is None or now - checked >= 0.5:
                checked = now
                dead = [r for r, p in self.procs.items() if not p.is_alive()]
                if dead:
                    return self.role_failed(dead[0], f"process exited with code {self.procs[dead[0]].exitcode}")
                stuck = self._stopped_too_long(now)
                if stuck:  # e.g. SIGSTOP: it would never answer; a restart replaces it
                    return self.role_failed(stuck, f"process stopped (state T) for more than "
                                                   f"{self.cfg.runtime.timeout_s:.0f} s (runtime.timeout_s)")
            if now > deadline and (msg is None or now > deadline + 1.0):  # drain what is queued, then give up
                # A role stopped since before this wait began is why nothing came: replace it (its stopped-for
                # clock started at the first look, so it may not have run out yet), do not end the run.
                stopped = next((r for r, p in self.procs.items() if _stopped(p.pid)), None)
                if stopped is not None:
                    return self.role_failed(stopped, f"process stopped (state T) while the learner received "
                                                     f"nothing for {timeout:.0f} s (runtime.timeout_s)")
                raise TimeoutError(f"the learner received nothing for {timeout:.0f} s (runtime.timeout_s); "
                                   f"roles alive: {', '.join(r for r, p in self.procs.items() if p.is_alive())}")

    def _stopped_too_long(self, now: float):
        """A role whose process has been stopped (state T) for longer than runtime.timeout_s, or None."""
        for role, p in self.procs.items():
            if not _stopped(p.pid):
                self._stopped_since.pop(role, None)
            elif now - self._stopped_since.setdefault(role, now) > self.cfg.runtime.timeout_s:
                return role
        return None

    def close(self) -> None:
        for inbox in self.inboxes.values():
            try:
                inbox.put(Stop(), timeout=1.0)
            except queue.Full:
                pass
        deadline = time.monotonic() + 5.0
        for p in self.procs.values():
            p.join(timeout=max(0.1, deadline - time.monotonic()))
        for p in self.procs.values():
            if p.is_alive():
                p.terminate()
                p.join(timeout=2.0)
            if p.is_alive():
                p.kill()
        self.learner_reader.abandon()


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP, a debugger), from /proc (False where there is none)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] in "Tt"
