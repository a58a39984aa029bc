"""The learner as a Ray actor. With ``runtime.backend=ray`` the learner's process (the pipeline loop and
the ``Learner``: what the local backend runs in the main process) runs inside an actor placed by
``ray.learner``, so the learner can sit on a GPU node while ``tristream train`` runs anywhere:

    driver (tristream train) --call(rl_train ...)--> LearnerActor --RayBackend--> env worker, inference actors
    Ctrl-C / SIGTERM ----------stop()--------------->  (it creates and owns the role actors)

The driver only places the actor, waits, forwards a stop request and reports where things failed; the
actor's progress lines come back through Ray's log forwarding. The actor writes the run directory
(metrics, checkpoints): without node constraints in ``ray.learner`` it is pinned to the driver's node so
the files land where the command runs; placed elsewhere, give it shared storage (docs/cluster.md).
Role actors are owned by the learner actor, so Ray removes them with it whatever way it ends.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from tristream.runtime.backends import ray_placement as placement
from tristream.runtime.backends.ray_channels import connect, prepare_actor_process, where_am_i
from tristream.runtime.topology import Topology


def in_actor() -> bool:
    """True inside any Ray actor (where the learner's loop must run itself, not start another actor)."""
    import ray
    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


class ActorStopFlag:
    """The actor's side of the driver's StopFlag (``set`` and callable, as the training loop expects)."""

    def __init__(self):
        self.set = False

    def __call__(self) -> bool:
        return self.set


class LearnerActor:
    """Runs one function of the learner's process, e.g. ``rl_train``; ``stop`` is served by a second thread."""

    def __init__(self, torch_threads: int):
        self.normal_priority = prepare_actor_process()  # first: OMP_WAIT_POLICY counts only before torch loads
        import torch
        torch.set_num_threads(torch_threads)  # Ray sets OMP_NUM_THREADS from the CPU share (1 for 0.5)
        self.flag = ActorStopFlag()

    def where(self) -> dict[str, Any]:
        return where_am_i()

    def call(self, fn: Callable, args: tuple, kwargs: dict, pass_stop: bool) -> Any:
        return fn(*args, **kwargs, stop=self.flag) if pass_stop else fn(*args, **kwargs)

    def stop(self) -> None:
        self.flag.set = True


def run_in_learner_actor(cfg, fn: Callable, *args, stop=None, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` inside a learner actor placed by ``cfg.ray``; returns its result.

    ``stop``: the driver's StopFlag; once set, the actor's flag is set too and ``fn`` gets it as ``stop=``
    (pass None for functions without a ``stop`` parameter). Ray is connected as ``ray.address`` says and
    a local instance started here is shut down at the end."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    started = connect(cfg.ray)
    actor = None
    try:
        req = placement.learner_request(cfg)
        options, pinned = req.options(), {}
        if set(req.resources) <= {"CPU"} and not req.labels:  # no node asked for: stay with the run directory
            pinned = {"learner": ray.get_runtime_context().get_node_id()}
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(pinned["learner"], soft=False)
        placement.check_fits([*placement.requests(cfg, Topology.from_config(cfg)), req], ray.nodes(), placed=pinned)
        actor = ray.remote(LearnerActor).options(max_concurrency=2, **options).remote(cfg.run.torch_threads)
        node = _wait_placed(actor, req, cfg.ray.start_timeout_s)
        ref = actor.call.remote(fn, args, kwargs, stop is not None)
        forwarded = False
        while True:
            ready, _ = ray.wait([ref], timeout=0.5)
            if ready:
                try:
                    return ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    raise RuntimeError(f"the learner actor (node {node['node_ip']} ({node['node_id'][:8]}), pid "
                                       f"{node['pid']}) died: {e}; what it checkpointed can be resumed with "
                                       f"tristream train --resume RUN_DIR") from e
                except ray.exceptions.RayTaskError as e:  # the function raised: re-raise its own exception
                    raise e.as_instanceof_cause() from None
            if stop is not None and stop.set and not forwarded:
                actor.stop.remote()
                forwarded = True
    finally:  # after its function returned, or on a second Ctrl-C (KeyboardInterrupt): Ray then
        if actor is not None:  # removes the role actors with their owner
            ray.kill(actor)
        if started:
            ray.shutdown()


def _wait_placed(actor, req: placement.ActorRequest, timeout_s: float) -> dict[str, Any]:
    """The actor's node once it runs; a reservation no node can grant in time is an error, not a hang."""
    import ray
    t0 = time.monotonic()
    try:
        return ray.get(actor.where.remote(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise placement.PlacementError(
            f"the learner actor was not started within ray.start_timeout_s={timeout_s:g} s "
            f"({time.monotonic() - t0:.0f} s): it needs {placement.fmt_resources(req.resources)} (ray.learner.*)"
            + ("" if set(req.resources) - {"CPU"} or req.labels else
               " on the driver's node (it writes the run directory there; set ray.learner.resources or "
               "labels to place it elsewhere)")) from None
