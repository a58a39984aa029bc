"""Channels over Ray, and the actor that hosts one role.

A role never knows it runs in Ray: it reads its inbox and puts into other roles' channels, as in a
local process. Here

    sender   --handle.deliver.remote(msg)-->  RoleActor.deliver  -> inbox (a queue in the actor)
    the role --outbox.put(msg)-------------> RoleActor.outbox  <-- RoleActor.take(), long-polled by the learner

so one message (a group's observations, a group's actions, a batch of finished segments) is one actor
call, never one call per env step. Arguments and results over ~100 kB go through Ray's object store
(shared memory on a node, a transfer between nodes), so images are never pickled into a control message.
An env worker on the inference actor's node (``ray.shared_memory``) writes its observation images into a
/dev/shm block instead and sends only the block's name, as in the local backend (``runtime/shm.py``).
The learner (in the learner actor, ``ray_learner.py``, or in a driver, which cannot receive actor calls)
drains the outbox with ``take``: a role's messages arrive in the order it sent them. The outbox is
bounded, like the local backend's learner inbox: a role blocks when the learner falls behind.

This module imports neither torch nor ray at import time: env-worker actors never need torch.
"""
from __future__ import annotations

import os
import queue
import signal
import traceback
import warnings
from typing import Any

from tristream.runtime.channels import Empty
from tristream.runtime.messages import RoleError
from tristream.runtime.roles import Inboxes, build_role
from tristream.runtime.topology import RoleId

TAKE_WAIT_S = 0.2  # how long one ``take`` waits for the first message (bounds the learner's poll cadence)


def quiet_readonly_arrays() -> None:
    """Arrays fetched from the object store are read-only views of shared memory; torch warns when it
    wraps one. Every consumer here only reads them or copies (``load_state_dict``, ``torch.cat``)."""
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def normal_priority() -> bool:
    """Undo Ray's default worker niceness (15) for every thread of this process; False where not permitted
    (then start the nodes with RAY_worker_niceness=0, docs/cluster.md). Linux keeps a nice value per thread."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    try:
        for tid in tids:
            if os.getpriority(os.PRIO_PROCESS, tid) > 0:
                os.setpriority(os.PRIO_PROCESS, tid, 0)
        return True
    except (OSError, AttributeError):
        return False


def prepare_actor_process() -> bool:
    """What every tristream actor's fresh process needs first; returns ``normal_priority()``."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # before any simulator import
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    quiet_readonly_arrays()
    try:  # the driver owns shutdown: Ctrl-C there ends in a checkpoint and a clean stop
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass
    return normal_priority()


def where_am_i() -> dict[str, Any]:
    """This process's node and pid (an actor's or the driver's), for the placement printout and errors."""
    import ray
    return {"node_ip": ray.util.get_node_ip_address(), "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(), "nice": os.getpriority(os.PRIO_PROCESS, 0)}


def connect(ray_cfg) -> bool:
    """Connect this process to Ray as ``ray.address`` says; True when it started a local instance."""
    import ray
    if ray.is_initialized():
        return False
    if ray_cfg.address:
        ray.init(address=ray_cfg.address, logging_level="WARNING")
        return False
    # Ray starts workers at nice 15 by default: next to any other busy process the roles would get a
    # fraction of a core (measured: env steps 2x slower on a loaded 2-core machine). Roles are the work.
    ray.init(num_cpus=ray_cfg.num_cpus or None, include_dashboard=False, logging_level="WARNING",
             _system_config={"worker_niceness": 0})
    return True


class QueueChannel:
    """A thread-safe FIFO inside one actor, with the channel interface (``get`` raises ``Empty``)."""

    def __init__(self, maxsize: int = 0):
        self._q: queue.Queue = queue.Queue(maxsize)

    def put(self, item: Any, timeout: float | None = None) -> None:
        self._q.put(item, timeout=timeout)

    def get(self, timeout: float | None = None) -> Any:
        if timeout is not None and timeout <= 0:
            return self._q.get_nowait()
        return self._q.get(timeout=timeout)

    def get_all(self, timeout: float) -> list[Any]:
        """Everything queued, waiting up to ``timeout`` for the first item ([] if none came)."""
        try:
            items = [self.get(timeout)]
        except Empty:
            return []
        while True:
            try:
                items.append(self._q.get_nowait())
            except Empty:
                return items

    def qsize(self) -> int:
        return self._q.qsize()


class ActorChannel:
    """The sender's side of another actor's inbox: one fire-and-forget actor call per message."""

    def __init__(self, handle):
        self.handle = handle

    def put(self, item: Any, timeout: float | None = None) -> None:
        self.handle.deliver.remote(item)


class RoleActor:
    """Hosts one EnvWorker or InferenceWorker, built by ``runtime/roles.py`` as in every backend.

    Lifecycle (driven by ``backends/ray.py``): create all actors, ``connect`` each to its peers' handles
    (builds the role, returns where it runs), then ``run`` (the role's loop, one long call) while
    ``deliver`` and ``take`` serve in the actor's other threads."""

    def __init__(self, role: RoleId, cfg, topology, env_spec, outbox_size: int, policy_spec=None):
        self.normal_priority = prepare_actor_process()
        self.name, self.cfg, self.topology, self.env_spec, self.policy_spec = role, cfg, topology, env_spec, policy_spec
        self.inbox = QueueChannel()  # peers fill it; a group has at most one request or reply in flight
        self.outbox = QueueChannel(outbox_size)
        self.role = None

    def connect(self, inference, env_workers: dict[int, Any]) -> dict[str, Any]:
        normal_priority()  # threads the role starts here (renderer, torch) inherit this thread's priority
        inboxes = Inboxes(self.inbox, ActorChannel(inference), {w: ActorChannel(h) for w, h in env_workers.items()},
                          self.outbox)
        self.role = build_role(self.name, self.cfg, self.topology, inboxes, env_spec=self.env_spec, policy_spec=self.policy_spec,
                               own_process=True)
        return where_am_i()

    def use_shared_memory(self, tag: str) -> None:
        """Env worker on the inference actor's node: images through /dev/shm blocks named with ``tag``
        (runtime.shm.block_tag), the request carries the name."""
        self.role.shm_tag = tag

    def unlink_shared_memory(self) -> None:
        """Before the actor is killed: remove its /dev/shm block names (kill skips the role's own cleanup)."""
        if self.role is not None:
            self.role.unlink_shared_memory()

    def run(self) -> None:
        """The role's loop until ``Stop``; a failure goes to the learner as ``RoleError``, as locally."""
        normal_priority()  # this thread-pool thread may predate __init__'s reset
        try:
            self.role.run()
        except Exception:
            self.outbox.put(RoleError(self.name, traceback.format_exc(), os.getpid()), timeout=10.0)

    def deliver(self, msg) -> None:
        self.inbox.put(msg)

    def take(self, wait_s: float = TAKE_WAIT_S) -> list:
        return self.outbox.get_all(wait_s)
