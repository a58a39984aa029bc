"""The wiring: who sends what to whom, in one place (read top to bottom).

    Learner  --Weights(version)-------------------> InferenceWorker
    pipeline --StartRollout(step, min_version)----> EnvWorker w
    EnvWorker --ObsRequest(group)-----------------> InferenceWorker --ActionReply(group)--> EnvWorker
    EnvWorker --SegmentBatch, RolloutDone---------> Learner (this process)

Scheduling by ``runtime.mode`` (the roles are the same in every mode):

- ``sync``: lockstep inference (every running group answered in one batch); train after the rollout.
- ``async-rollout``: groups step on their own clocks through the dynamic batcher; train after the rollout.
- ``async``: as async-rollout, and the learner trains on the step's segments while they stream in. Weights
  are published once per global step. With ``runtime.max_policy_lag = L`` an env worker may start the
  rollout of step j once the learner has finished step j - L - 1 (it then acts with weights up to L
  versions old, corrected by the decoupled loss); with L = 0 the data are exactly those of ``sync``.

The version of the weights equals the number of completed global steps.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Callable

import numpy as np

from tristream.metrics.trace import Tracer
from tristream.runtime.backends import make_backend
from tristream.runtime.learner import Learner
from tristream.runtime.messages import RoleRestarted, RolloutDone, SegmentBatch, StartRollout, Weights
from tristream.runtime.roles import policy_spec, shard_plan
from tristream.runtime.streaming import StreamingUpdate
from tristream.types import Segment


class RolloutLost(Exception):
    """A role failed and every role was restarted: the unfinished rollout is gone."""


class StopRequested(Exception):
    """A signal asked the run to stop; the unfinished rollout is dropped (it reruns identically on resume)."""


def _order(segments: list[Segment]) -> list[Segment]:
    """Arrival order depends on process timing; the order of training data must not."""
    return sorted(segments, key=lambda s: (s.env_id, s.episode_seed, int(s.policy_version[0]), -s.length,
                                           int(s.env_steps.sum())))


def run_rollout(backend, cfg, learner: Learner, global_step: int, restarts: dict[str, int],
                should_stop: Callable[[], bool] = lambda: False) -> list[Segment]:
    """Start one global step's episodes on every env worker and gather all its segments."""
    plan = shard_plan(cfg)
    backend.send_env_workers(StartRollout(global_step, learner.version, cfg.rollout.episodes_per_env))
    segments: list[Segment] = []
    done: set[int] = set()
    while len(done) < plan.env_workers:
        if should_stop():
            raise StopRequested
        msg = backend.learner_get(timeout=cfg.runtime.timeout_s)
        if isinstance(msg, SegmentBatch):
            segments.extend(msg.segments)
        elif isinstance(msg, RolloutDone) and msg.global_step == global_step:
            done.add(msg.worker_id)
        elif isinstance(msg, RoleRestarted):
            restarts[msg.role] = restarts.get(msg.role, 0) + 1
            raise RolloutLost
    return _order(segments)


def episode_metrics(segments: list[Segment], trained_at_version: int) -> dict[str, float]:
    ends = [s for s in segments if s.episode_done]
    out: dict[str, float] = {"episodes": float(len(ends)),
                             "env_steps": float(sum(int(s.env_steps.sum()) for s in segments))}
    if ends:
        out["success"] = float(np.mean([s.episode_success for s in ends]))
        out["return"] = float(np.mean([s.episode_return for s in ends]))
        out["ep_len"] = float(np.mean([s.episode_length for s in ends]))
        by_task: dict[str, list[bool]] = defaultdict(list)
        for s in ends:
            by_task[s.task].append(s.episode_success)
        for task, v in sorted(by_task.items()):
            out[f"success/{task}"] = float(np.mean(v))
    versions = np.concatenate([s.policy_version for s in segments]) if segments else np.zeros(1, np.int64)
    lag = trained_at_version - versions
    return out | {"policy_version_min": float(versions.min()), "policy_version_max": float(versions.max()),
                  "policy_lag_mean": float(lag.mean()), "policy_lag_max": float(lag.max())}


def train_loop(cfg, policy, env_spec, *, learner: Learner, start_step: int,
               on_step: Callable[[int, dict[str, Any]], None],
               should_stop: Callable[[], bool] = lambda: False, backend=None) -> int:
    """Run global steps ``start_step .. cfg.train.steps - 1``; returns the next step to run.

    ``on_step(step, metrics)`` logs and checkpoints. ``should_stop`` is checked while waiting (signals).
    A ``backend`` passed in is used and left open (the benchmark reads its telemetry).
    """
    own = backend is None
    backend = backend or make_backend(cfg, env_spec, policy_spec(policy))
    tracer = Tracer("learner")
    try:
        run = _run_streaming if cfg.runtime.mode == "async" else _run_after_rollout

        def step_done(step: int, metrics: dict[str, Any]) -> None:
            backend.telemetry.take(tracer.telemetry())
            on_step(step, metrics)

        return run(backend, cfg, learner, tracer, start_step, step_done, should_stop)
    finally:
        if own:
            backend.close()


def _publish(backend, learner: Learner) -> None:
    backend.send_inference(Weights(learner.version, {k: v.numpy() for k, v in learner.weights().items()}))


def _run_after_rollout(backend, cfg, learner, tracer, step, on_step, should_stop) -> int:
    """sync and async-rollout: publish, roll out the whole step, then train on it."""
    restarts: dict[str, int] = {}
    while step < cfg.train.steps and not should_stop():
        t0 = time.perf_counter()
        _publish(backend, learner)
        try:
            segments = run_rollout(backend, cfg, learner, step, restarts, should_stop)
        except StopRequested:
            break
        except RolloutLost:  # redo the step: its seeds and weights are fixed, so it is the same rollout
            continue
        t_rollout = time.perf_counter() - t0
        metrics = episode_metrics(segments, learner.version)
        with tracer.span("train"):
            metrics |= learner.update(segments)
        elapsed = time.perf_counter() - t0
        metrics |= {"rollout_s": t_rollout, "update_s": elapsed - t_rollout, "step_s": elapsed,
                    "env_steps_per_s": metrics["env_steps"] / elapsed, "version": float(learner.version),
                    **{f"restarts/{role}": float(n) for role, n in restarts.items()}}
        step += 1
        on_step(step, metrics)
    return step


def _run_streaming(backend, cfg, learner, tracer, step, on_step, should_stop) -> int:
    """async: train on step k's segments as they arrive; start later rollouts within the lag bound.

    Messages come before training: the loop trains one optimizer step only when no message is waiting,
    so a finished rollout is answered with the next one (admission permitting) within one optimizer step
    instead of after a whole training block (trained on arrival, batch after batch, the env workers sat
    idle ~2 of every ~5.5 s here waiting for the dispatch of their next rollout)."""
    plan = shard_plan(cfg)
    lag_bound = cfg.runtime.max_policy_lag
    next_step = {w: step for w in range(plan.env_workers)}  # the rollout each worker runs next
    running: set[int] = set()
    finished: dict[int, set[int]] = defaultdict(set)  # global step -> workers done with it
    early: dict[int, list[Segment]] = defaultdict(list)  # segments of steps the learner has not reached
    collected: list[Segment] = []
    restarts: dict[str, int] = {}
    stream = StreamingUpdate(learner, cfg.rollout.group_size)

    def dispatch() -> None:
        """Admission control: a worker may start rollout j once the learner is at step >= j - lag_bound."""
        for w in range(plan.env_workers):
            j = next_step[w]
            if w not in running and j < cfg.train.steps and j - step <= lag_bound:
                backend.send_env_worker(w, StartRollout(j, learner.version, cfg.rollout.episodes_per_env))
                running.add(w)

    _publish(backend, learner)
    t0 = time.perf_counter()
    while step < cfg.train.steps:
        dispatch()
        if should_stop():
            break
        rollout_over = len(finished[step]) == plan.env_workers
        if rollout_over:
            stream.close()
        if stream.pending or rollout_over:
            msg = backend.learner_poll()
        else:
            msg = backend.learner_get(timeout=cfg.runtime.timeout_s)
        if isinstance(msg, SegmentBatch):
            segs = msg.segments
            if segs[0].global_step == step:
                collected += segs
                with tracer.span("prepare"):
                    stream.add(_order(segs))
            else:
                early[segs[0].global_step] += segs
        elif isinstance(msg, RolloutDone):
            finished[msg.global_step].add(msg.worker_id)
            running.discard(msg.worker_id)
            next_step[msg.worker_id] = msg.global_step + 1
        elif isinstance(msg, RoleRestarted):
            # Every role was restarted: rollouts in flight are gone. Close this step with what arrived
            # (open GRPO groups are dropped) and go on with fresh rollouts from the next step.
            restarts[msg.role] = restarts.get(msg.role, 0) + 1
            _publish(backend, learner)
            running.clear()
            early.clear()
            finished[step] = set(range(plan.env_workers))
            next_step = {w: step + 1 for w in range(plan.env_workers)}
        elif stream.pending:
            with tracer.span("train"):
                stream.train_step()
        elif rollout_over:  # every segment of the step trained on: close the step
            metrics = episode_metrics(collected, learner.version) | stream.finish()
            elapsed = time.perf_counter() - t0
            metrics |= {"step_s": elapsed, "env_steps_per_s": metrics["env_steps"] / elapsed,
                        "version": float(learner.version),
                        **{f"restarts/{r}": float(n) for r, n in restarts.items()}}
            del finished[step]
            step += 1
            _publish(backend, learner)
            on_step(step, metrics)
            t0 = time.perf_counter()
            stream = StreamingUpdate(learner, cfg.rollout.group_size)
            collected = early.pop(step, [])
            if collected:
                with tracer.span("prepare"):
                    stream.add(_order(collected))
    return step
