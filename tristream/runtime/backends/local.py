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

from tristream.runtime import roles
from tristream.runtime.backends.base import Backend
from tristream.runtime.channels import ProcessChannel
from tristream.runtime.messages import RoleError, RoleRestarted, Stop
from tristream.runtime.telemetry import TelemetrySink


def _role_main(kind: str, cfg, args: tuple, learner_inbox, policy_spec=None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if kind == "env":
            from tristream.runtime.env_worker import run_env_worker
            run_env_worker(roles.build_env_worker(cfg, *args, learner_inbox, shared_memory=True))
        else:
            import torch
            torch.set_num_threads(cfg.runtime.inference_threads)
            from tristream.runtime.inference import run_inference_worker
            run_inference_worker(roles.build_inference_worker(cfg, *args, policy_spec=policy_spec))
    except Exception:
        learner_inbox.put(RoleError("inference" if kind == "inference" else f"env_worker{args[0]}",
                                    traceback.format_exc(), os.getpid()))


class LocalBackend(Backend):
    def __init__(self, cfg, env_spec, policy_spec=None):
        self.cfg, self.env_spec, self.policy_spec = cfg, env_spec, policy_spec
        self.ctx = mp.get_context("spawn")
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # env workers need no BLAS threads
        self.restarts: dict[str, int] = {}
        self.telemetry = TelemetrySink()
        self._start_all()

    def _start_all(self) -> None:
        plan = roles.shard_plan(self.cfg)
        depth = 4 * plan.num_groups + 8  # enough for every group's request plus control messages
        self.learner_inbox = ProcessChannel(self.ctx, maxsize=max(64, 4 * plan.num_envs))
        self.inference_inbox = ProcessChannel(self.ctx, maxsize=depth)
        self.env_inboxes = {w: ProcessChannel(self.ctx, maxsize=depth) for w in range(plan.env_workers)}
        self.procs: dict[str, mp.Process] = {}
        for w in range(plan.env_workers):
            self.procs[f"env_worker{w}"] = self._spawn(
                "env", (w, self.env_inboxes[w], self.inference_inbox), f"env_worker{w}")
        self.procs["inference"] = self._spawn(
            "inference", (self.env_spec, self.inference_inbox, self.env_inboxes, self.learner_inbox), "inference")

    def _spawn(self, kind: str, args: tuple, role: str) -> mp.Process:
        proc = self.ctx.Process(target=_role_main, name=f"tristream-{role}", daemon=True,
                                args=(kind, self.cfg, args, self.learner_inbox, self.policy_spec))
        proc.start()
        return proc

    def _restart(self, role: str, reason: str) -> RoleRestarted:
        """A role died or raised. A process killed while writing to a shared queue can leave the queue's
        lock taken for good, so every role process and every channel is replaced, not just the one that
        failed; the pipeline drops the unfinished rollout and publishes the weights again."""
        self.restarts[role] = self.restarts.get(role, 0) + 1
        if self.restarts[role] > self.cfg.runtime.max_restarts:
            raise RuntimeError(f"{role} failed {self.restarts[role]} times (runtime.max_restarts="
                               f"{self.cfg.runtime.max_restarts}); last failure: {reason}")
        print(f"[tristream] {role} failed ({reason.strip().splitlines()[-1]}); restarting the roles "
              f"(restart {self.restarts[role]} of at most {self.cfg.runtime.max_restarts} for {role})", flush=True)
        self._kill_all()
        self._start_all()
        worker = int(role.removeprefix("env_worker")) if role.startswith("env_worker") else None
        return RoleRestarted(role, worker, reason)

    def _kill_all(self) -> None:
        for p in self.procs.values():
            if p.is_alive():
                p.kill()
        for p in self.procs.values():
            p.join(timeout=5.0)
        for ch in [self.learner_inbox, self.inference_inbox, *self.env_inboxes.values()]:
            ch.abandon()

    def send_inference(self, msg) -> None:
        self.inference_inbox.put(msg, timeout=self.cfg.runtime.timeout_s)

    def send_env_worker(self, worker_id: int, msg) -> None:
        self.env_inboxes[worker_id].put(msg, timeout=self.cfg.runtime.timeout_s)

    def learner_get(self, timeout: float) -> object:
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.learner_inbox.get(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                dead = [n for n, p in self.procs.items() if not p.is_alive()]
                if dead:
                    return self._restart(dead[0], f"process exited with code {self.procs[dead[0]].exitcode}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the learner received nothing for {timeout:.0f} s (runtime.timeout_s); "
                                       f"roles alive: {', '.join(n for n, p in self.procs.items() if p.is_alive())}")
                continue
            if isinstance(msg, RoleError):
                if msg.pid != self.procs[msg.role].pid:
                    continue  # that process was already found dead and replaced
                return self._restart(msg.role, msg.traceback)
            if not self.telemetry.take(msg):
                return msg

    def close(self) -> None:
        for inbox in [self.inference_inbox, *self.env_inboxes.values()]:
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
