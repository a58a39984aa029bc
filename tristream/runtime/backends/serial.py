"""Serial backend: every role in this process, pumped by one event loop (debugging and exact tests).
A role that raises raises here: there is no other process to restart."""
from __future__ import annotations

import time

from tristream.runtime.backends.base import Backend
from tristream.runtime.channels import Empty, SerialChannel
from tristream.runtime.roles import Inboxes, build_role
from tristream.runtime.telemetry import TelemetrySink
from tristream.runtime.topology import INFERENCE


class SerialBackend(Backend):
    def __init__(self, cfg, topology, env_spec, policy_spec=None):
        self.cfg, self.topology = cfg, topology
        self.telemetry = TelemetrySink()
        self.learner_inbox = SerialChannel()
        self.inboxes = {role: SerialChannel() for role in topology.roles}
        env_inboxes = {r.index: self.inboxes[r] for r in topology.env_workers}
        self.roles = {role: build_role(role, cfg, topology, Inboxes(self.inboxes[role], self.inboxes[INFERENCE], env_inboxes,
                                                          self.learner_inbox), env_spec=env_spec, policy_spec=policy_spec)
                      for role in topology.roles}
        self.env_workers = [self.roles[r] for r in topology.env_workers]
        self.inference = self.roles[INFERENCE]

    def send_inference(self, msg) -> None:
        self.inboxes[INFERENCE].put(msg)

    def send_env_worker(self, worker: int, msg) -> None:
        self.env_workers[worker].inbox.put(msg)

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
            for worker in self.env_workers:
                if worker.inbox.qsize() or worker.has_due():
                    worker.poll(timeout=0)
                    progressed = True
            if self.inboxes[INFERENCE].qsize() or self.inference.pending:  # pending: waiting for T_max
                self.inference.poll(timeout=0)
                progressed = True
            if not progressed and time.monotonic() > deadline:
                raise TimeoutError("serial backend: no role has work and the learner got nothing (deadlock)")

    def close(self) -> None:
        for worker in self.env_workers:
            worker.close()
