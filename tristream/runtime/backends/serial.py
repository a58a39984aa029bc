"""Serial backend: every role in this process, pumped by one event loop (debugging and exact tests)."""
from __future__ import annotations

import time

from tristream.runtime import roles
from tristream.runtime.backends.base import Backend
from tristream.runtime.channels import Empty, SerialChannel
from tristream.runtime.telemetry import TelemetrySink


class SerialBackend(Backend):
    def __init__(self, cfg, env_spec, policy_spec=None):
        self.cfg = cfg
        plan = roles.shard_plan(cfg)
        self.learner_inbox = SerialChannel()
        self.inference_inbox = SerialChannel()
        self.env_inboxes = {w: SerialChannel() for w in range(plan.env_workers)}
        self.env_workers = [roles.build_env_worker(cfg, w, self.env_inboxes[w], self.inference_inbox,
                                                   self.learner_inbox) for w in range(plan.env_workers)]
        self.inference = roles.build_inference_worker(cfg, env_spec, self.inference_inbox, self.env_inboxes,
                                                      self.learner_inbox, policy_spec=policy_spec)
        self.telemetry = TelemetrySink()

    def send_inference(self, msg) -> None:
        self.inference_inbox.put(msg)

    def send_env_worker(self, worker_id: int, msg) -> None:
        self.env_inboxes[worker_id].put(msg)

    def learner_get(self, timeout: float) -> object:
        """Pump every role until the learner has a message."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.learner_inbox.get()
                if not self.telemetry.take(msg):
                    return msg
                continue
            except Empty:
                pass
            progressed = False
            for w, worker in enumerate(self.env_workers):
                if self.env_inboxes[w].qsize() or worker.has_due():
                    worker.poll(timeout=0)
                    progressed = True
            if self.inference_inbox.qsize() or self.inference.pending:  # pending: waiting for T_max
                self.inference.poll(timeout=0)
                progressed = True
            if not progressed and time.monotonic() > deadline:
                raise TimeoutError("serial backend: no role has work and the learner got nothing (deadlock)")

    def close(self) -> None:
        for worker in self.env_workers:
            worker.close()
