"""Ray backend: each EnvWorker and the InferenceWorker as a Ray actor (the same role classes, built by
``runtime/roles.py``), driven by the process that creates the backend: the learner actor of
``tristream train`` (``ray_learner.py``), or a driver that runs ``train_loop`` itself (tests, scripts).

- Cluster: ``ray.address`` empty starts a local instance (stopped at close); ``auto`` or host:port joins
  a running cluster (left running). An already connected driver (a test's shared instance) is reused.
- Placement: ``ray_placement`` turns the ``ray`` section into per-actor requests, checks them against the
  cluster before creating anything (an impossible placement is an error naming the role and what is
  missing, not a pending actor) and prints where each role runs.
- Data: messages go actor to actor (``ray_channels``): one call per group request, per action reply,
  per batch of finished segments. Weights are put in the object store once per publication; each
  inference actor fetches them from there.
- Faults: as in the local backend, a role that raises, dies (``ray.kill``, a lost node) or stops answering
  (its pending ``take`` unanswered for ``runtime.timeout_s``: a stopped or hung process) makes the backend
  replace every role actor (in-flight messages of the old ones are dropped with them), count it, and hand
  the pipeline a ``RoleRestarted``. A replacement that cannot be placed yet (a lost node not back) is
  tried again until ``ray.start_timeout_s``. Every wait on another actor has a timeout; errors name the
  role and its node.
"""
from __future__ import annotations

import collections
import os
import time
from pathlib import Path

from tristream.runtime.backends import ray_placement as placement
from tristream.runtime.backends.base import Backend, RestartPolicy, write_roles_file
from tristream.runtime.backends.ray_channels import (TAKE_WAIT_S, ActorChannel, RoleActor, connect,
                                                     quiet_readonly_arrays, where_am_i)
from tristream.runtime.backends.ray_learner import in_actor
from tristream.runtime.messages import RoleError, Stop, Weights
from tristream.runtime.shm import block_tag
from tristream.runtime.telemetry import TelemetrySink
from tristream.runtime.topology import INFERENCE, RoleId


class LearnerInbox(collections.deque):
    """Messages taken from the role actors, not yet handed to the pipeline (``qsize`` for the benchmark)."""

    def qsize(self) -> int:
        return len(self)


class RayBackend(Backend):
    def __init__(self, cfg, topology, env_spec, policy_spec=None):
        import ray
        self.cfg, self.topology, self.env_spec, self.policy_spec = cfg, topology, env_spec, policy_spec
        self._started_ray = connect(cfg.ray)
        quiet_readonly_arrays()  # segments arrive as read-only views of the object store
        self._actor_class = ray.remote(RoleActor)
        self.requests = placement.requests(cfg, topology)
        # The learner is this process: a learner actor holds its own reservation, which the check counts.
        self.host = where_am_i()
        self.host_request = placement.learner_request(cfg) if in_actor() else None
        self.telemetry = TelemetrySink()
        self.learner_inbox = LearnerInbox()
        self.restart_policy = RestartPolicy(cfg.runtime.max_restarts)
        self.actors: dict = {}
        self.nodes: dict[str, dict] = {}
        self._takes: dict = {}  # the pending take() of each actor -> (its role, when it was asked)
        self._runs: list = []  # each actor's run() (ends at Stop)
        try:
            self._check_fits()
            self._start_all(time.monotonic() + cfg.ray.start_timeout_s)
        except BaseException:
            self.close()
            raise
        host = self.host_request or placement.ActorRequest("learner", "driver", {})
        where = {r: self.where(r) for r in self.nodes}
        where["learner"] = _fmt_where(self.host) + ("" if self.host_request else " (the driver)")
        print(placement.describe([*self.requests, host], where), flush=True)
        niced = sorted(r for r, n in self.nodes.items() if n.get("nice", 0) > 0)
        if niced:
            print(f"[tristream] warning: {', '.join(niced)} run at nice {self.nodes[niced[0]]['nice']} (Ray's "
                  f"default for workers) and could not be reset: start the nodes with RAY_worker_niceness=0",
                  flush=True)

    # --- lifecycle ------------------------------------------------------------------------------
    def _start_all(self, deadline: float) -> None:
        outbox = self.topology.learner_inbox_size  # as the local backend's learner inbox
        for r in self.requests:
            self.actors[r.role] = self._actor_class.options(max_concurrency=4, **r.options()).remote(
                r.role, self.cfg, self.topology, self.env_spec, outbox, self.policy_spec)
        envs = {role.index: self.actors[role] for role in self.topology.env_workers}
        self.env_inboxes = {w: ActorChannel(h) for w, h in envs.items()}
        started = {a.connect.remote(self.actors[INFERENCE], envs): role for role, a in self.actors.items()}
        self.nodes = self._wait_started(started, deadline)
        self._share_memory_on_node()
        self._runs = [a.run.remote() for a in self.actors.values()]
        now = time.monotonic()
        self._takes = {a.take.remote(TAKE_WAIT_S): (role, now) for role, a in self.actors.items()}
        self.learner_inbox.clear()
        write_roles_file(Path(self.cfg.run.dir) / self.cfg.run.name,
                         {"learner": os.getpid(), **{str(r): n["pid"] for r, n in self.nodes.items()}})

    def _share_memory_on_node(self) -> None:
        """Env workers on the inference actor's node send images through /dev/shm (``ray.shared_memory``)."""
        import ray
        here = self.nodes[INFERENCE]["node_id"]
        env_roles = list(self.topology.env_workers)
        local = [r for r in env_roles if self.cfg.ray.shared_memory and self.nodes[r]["node_id"] == here]
        tag = block_tag(Path(self.cfg.run.dir) / self.cfg.run.name)
        ray.get([self.actors[r].use_shared_memory.remote(tag) for r in local], timeout=self.cfg.runtime.timeout_s)
        store = [r for r in env_roles if r not in local]
        print("[tristream] observation images: "
              + "; ".join(part for part in (f"node shared memory for {', '.join(local)}" if local else "",
                                            f"Ray object store for {', '.join(store)}" if store else "") if part),
              flush=True)

    def _wait_started(self, started: dict, deadline: float) -> dict[str, dict]:
        """Wait until every actor is placed and has built its role; a placement that stays pending past
        ``deadline`` (the cluster is busy, a node vanished) is an error naming the roles, not a hang."""
        import ray
        nodes, pending = {}, dict(started)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                waiting = [r for r in self.requests if r.role in pending.values()]
                raise placement.PlacementError(
                    f"not started within ray.start_timeout_s={self.cfg.ray.start_timeout_s:g} s: "
                    + ", ".join(f"{r.role} (needs {placement.fmt_resources(r.resources)}"
                                + (f", labels {r.labels}" if r.labels else "") + ")" for r in waiting)
                    + f"; resources free in the cluster now: {placement.fmt_resources(_free())}")
            for ref in ready:
                role = pending.pop(ref)
                try:
                    nodes[role] = ray.get(ref)
                except ray.exceptions.RayError as e:
                    raise RuntimeError(f"{role} failed to start: {e}") from e
        return nodes

    def _check_fits(self) -> None:
        import ray
        if self.host_request is None:
            placement.check_fits(self.requests, ray.nodes())
        else:
            placement.check_fits([*self.requests, self.host_request], ray.nodes(),
                                 placed={"learner": self.host["node_id"]})

    def where(self, role: RoleId) -> str:
        n = self.nodes.get(role)
        return _fmt_where(n) if n else "node unknown (not started)"

    def replace_roles(self) -> None:
        """Kill every role actor and start them all again. A start that fails (the node a role needs is
        lost and not back yet, or Ray placed an actor on a node it has not yet declared dead) is tried
        again every 2 s until ``ray.start_timeout_s`` has passed: a node that its supervisor restarts, or
        that an autoscaler replaces, is waited for; the last error is raised after that."""
        self._kill_all()
        deadline = time.monotonic() + self.cfg.ray.start_timeout_s
        waiting = False
        while True:
            try:
                self._check_fits()
                self._start_all(deadline)
                return
            except (placement.PlacementError, RuntimeError) as e:
                self._kill_all()
                if time.monotonic() + 2.0 > deadline:
                    raise
                if not waiting:
                    waiting = True
                    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    print(f"[tristream] the roles cannot be placed yet ({reason}); trying again for up to "
                          f"{deadline - time.monotonic():.0f} s (ray.start_timeout_s)", flush=True)
                time.sleep(2.0)

    def _kill_all(self) -> None:
        import ray
        if self.cfg.ray.shared_memory:  # the inference actor also unlinks the blocks of a dead env actor
            refs = [a.unlink_shared_memory.remote() for a in self.actors.values()]
            ray.wait(refs, num_returns=len(refs), timeout=5.0)  # a dead actor's call just fails
        for a in self.actors.values():
            ray.kill(a, no_restart=True)
        self.actors, self.nodes, self._takes, self._runs = {}, {}, {}, []
        self.learner_inbox.clear()

    def close(self) -> None:
        import ray
        if self.actors:
            for a in self.actors.values():
                a.deliver.remote(Stop())
            try:
                ray.get(self._runs, timeout=5.0)
            except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
                pass
            self._kill_all()
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    # --- channels ---------------------------------------------------------------------------------
    def send_inference(self, msg) -> None:
        import ray
        if isinstance(msg, Weights):  # put once; every inference actor fetches it from the object store
            msg = ray.put(msg)
        self.actors[INFERENCE].deliver.remote(msg)

    def send_env_worker(self, worker: int, msg) -> None:
        self.env_inboxes[worker].put(msg)

    def learner_get(self, timeout: float) -> object:
        deadline = time.monotonic() + timeout
        while True:
            while self.learner_inbox:
                msg = self.learner_inbox.popleft()
                if isinstance(msg, RoleError):
                    if msg.role in self.nodes and msg.pid == self.nodes[msg.role]["pid"]:
                        return self.role_failed(msg.role, msg.traceback)
                elif not self.telemetry.take(msg):
                    return msg
            restarted = self._take(min(0.5, max(0.0, deadline - time.monotonic())))
            if restarted is not None:
                return restarted
            silent = self._unanswered(self.cfg.runtime.timeout_s)
            if silent is not None:  # e.g. SIGSTOP, or a hung node: it would never answer; a restart replaces it
                return self._silent(silent)
            if not self.learner_inbox and time.monotonic() > deadline:
                # A full wait that ran out while a role had stopped answering before it began: that role is
                # why nothing came (a running actor answers a take within TAKE_WAIT_S); replace it.
                silent = self._unanswered(10 * TAKE_WAIT_S) if timeout >= self.cfg.runtime.timeout_s else None
                if silent is not None:
                    return self._silent(silent)
                raise TimeoutError(f"the learner received nothing for {timeout:.0f} s (runtime.timeout_s); roles: "
                                   + "; ".join(f"{r} on {self.where(r)}" for r in self.actors))

    def _take(self, wait_s: float):
        """Collect what the actors' outboxes hold (waiting up to ``wait_s``); a dead actor's pending
        ``take`` fails at once, which is how a killed actor or a lost node is noticed."""
        import ray
        refs = list(self._takes)
        ready, rest = ray.wait(refs, num_returns=1, timeout=wait_s)
        if ready and rest:
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        for ref in ready:
            role, _ = self._takes.pop(ref)
            try:
                msgs = ray.get(ref, timeout=self.cfg.runtime.timeout_s)
            except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as e:
                return self.role_failed(role, f"actor lost: {type(e).__name__}: {str(e).strip()}")
            self.learner_inbox.extend(msgs)
            self._takes[self.actors[role].take.remote(TAKE_WAIT_S)] = (role, time.monotonic())
        return None

    def _silent(self, role: RoleId):
        return self.role_failed(role, f"no answer for more than {self.cfg.runtime.timeout_s:.0f} s "
                                      f"(runtime.timeout_s): the actor is stopped or hung")

    def _unanswered(self, timeout_s: float):
        """The role whose ``take`` has been pending longest, if for longer than ``timeout_s`` + TAKE_WAIT_S (a
        take answers within TAKE_WAIT_S when the actor runs), else None."""
        now = time.monotonic()
        role, asked = min(self._takes.values(), key=lambda v: v[1], default=(None, now))
        return role if now - asked > timeout_s + TAKE_WAIT_S else None


def _fmt_where(n: dict) -> str:
    return f"node {n['node_ip']} ({n['node_id'][:8]}), pid {n['pid']}"


def _free() -> dict[str, float]:
    import ray
    return {k: v for k, v in ray.available_resources().items()
            if not k.startswith("node:") and k not in ("memory", "object_store_memory")}
