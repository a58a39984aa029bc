"""The learner's side of the run: one scheduling loop for every mode, over any backend.

The roles and who sends what to whom are the topology (:mod:`tristream.runtime.topology`), built once and
handed to the backend, which places the roles (this process, child processes, Ray actors). This loop
only sends ``Weights`` and ``StartRollout`` and reads what comes back.

One scheduling loop serves every ``runtime.mode`` (the roles are the same in every mode):

- ``sync``: lockstep inference (every running group answered in one batch); the step's update starts once
  its rollout is over; the next rollout starts once the step is trained (lag 0).
- ``async-rollout``: groups step on their own clocks through the dynamic batcher; otherwise as sync.
- ``async``: as async-rollout, and the update trains on the step's segments while they stream in; rollouts
  are admitted up to ``runtime.max_policy_lag`` steps ahead of the learner (:mod:`admission`).

The update is the same in every mode (:mod:`update`), so async at lag 0 trains exactly as sync. Weights are
published once per global step: the version of the weights equals the number of completed global steps.

A restart of the roles (a role died) loses the rollouts in flight. If nothing of the current step has been
trained yet (always so in sync and async-rollout), the step is rolled out again from scratch: its seeds and
weights are fixed, so it is the same rollout and nothing is half-trained. Otherwise (async, already trained
on part of it) the step closes with what arrived, an incomplete GRPO group dropped, and the run goes on
with the next step. Either way the restart is counted in ``restarts/<role>``. Past ``runtime.max_restarts``
the run stops (:class:`~tristream.runtime.backends.base.RestartsExhausted`), saying whether the learner's
state is still that of the last completed step, so the caller can checkpoint it.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Callable

import numpy as np

from tristream.metrics.trace import Tracer
from tristream.runtime.admission import Admission
from tristream.runtime.backends import make_backend
from tristream.runtime.backends.base import RestartsExhausted
from tristream.runtime.learner import Learner
from tristream.runtime.messages import RoleRestarted, RolloutDone, SegmentBatch, StartRollout, Weights
from tristream.policies.from_config import policy_spec
from tristream.runtime.update import StepUpdate
from tristream.types import Segment


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
        def step_done(step: int, metrics: dict[str, Any]) -> None:
            backend.telemetry.take(tracer.telemetry())
            on_step(step, metrics)

        return _run(backend, cfg, learner, tracer, start_step, step_done, should_stop)
    finally:
        if own:
            backend.close()


def _publish(backend, learner: Learner) -> None:
    backend.send_inference(Weights(learner.version, {k: v.numpy() for k, v in learner.weights().items()}))


def _run(backend, cfg, learner, tracer, step, on_step, should_stop) -> int:
    """Global steps ``step ..`` until ``train.steps``: admit rollouts, gather segments, train, publish.

    Messages come before training: the loop runs one optimizer step only when no message is waiting, so a
    finished rollout is answered with the next one (admission permitting) within one optimizer step
    instead of after a whole training block."""
    streamed = cfg.runtime.mode == "async"
    workers = backend.topology.plan.env_workers
    admission = Admission(workers, max_lag=cfg.runtime.max_policy_lag if streamed else 0, start_step=step,
                          total_steps=cfg.train.steps)
    restarts: dict[str, int] = {}
    early: dict[int, list[Segment]] = defaultdict(list)  # segments of steps the learner has not reached
    dropped = 0  # segments received since the last step closed that no step will train (restarts)

    def new_step(first: list[Segment]):
        update = StepUpdate(learner, envs=range(cfg.rollout.num_envs) if streamed else None,
                            episodes_per_env=cfg.rollout.episodes_per_env, group_size=cfg.rollout.group_size,
                            fixed_horizon=cfg.rollout.steps_per_env > 0)
        update.add(first)
        return update, list(first), time.perf_counter()

    _publish(backend, learner)
    update, collected, t0 = new_step([])
    lost = False  # the current step's rollout was cut short by a restart
    t_rollout = overlap = None
    try:
        while step < cfg.train.steps:
            for w, j in admission.admit(step):
                backend.send_env_worker(w, StartRollout(j, learner.version, cfg.rollout.episodes_per_env,
                                                        cfg.rollout.steps_per_env))
            if should_stop():
                break
            over = lost or admission.rollout_over(step)
            if over and t_rollout is None:
                t_rollout = time.perf_counter() - t0
                overlap = update.optimizer_steps  # taken while the rollout ran (streamed learning)
                if not streamed:
                    with tracer.span("prepare"):
                        update.add(collected)
                update.close()
            busy = update.pending or over
            msg = backend.learner_poll() if busy else backend.learner_get(timeout=cfg.runtime.timeout_s)
            if isinstance(msg, SegmentBatch):
                segs = msg.segments
                if segs[0].global_step < step:  # a closed step's (a backend must not deliver these): not trained
                    dropped += len(segs)
                elif segs[0].global_step > step:
                    early[segs[0].global_step] += segs
                else:
                    collected += segs
                    if streamed:
                        with tracer.span("prepare"):
                            update.add(segs)
            elif isinstance(msg, RolloutDone):
                admission.finished(msg.worker_id, msg.global_step)
            elif isinstance(msg, RoleRestarted):
                restarts[str(msg.role)] = restarts.get(str(msg.role), 0) + 1
                _publish(backend, learner)
                dropped += sum(map(len, early.values()))
                early.clear()
                if update.started:
                    lost = True
                    admission.restart(step + 1)
                else:  # rerun the step from scratch (its rollout may have ended already)
                    dropped += len(collected)
                    admission.restart(step)
                    update, collected, t0 = new_step([])
                    lost, t_rollout, overlap = False, None, None
            elif update.pending:
                with tracer.span("train"):
                    update.train_step()
            elif over:  # every segment of the step trained on: close the step
                metrics = episode_metrics(collected, learner.version) | update.finish()
                metrics["segments_dropped"] += dropped
                dropped = 0
                elapsed = time.perf_counter() - t0
                metrics |= {"rollout_s": t_rollout, "update_s": elapsed - t_rollout, "step_s": elapsed,
                            "env_steps_per_s": metrics["env_steps"] / elapsed, "version": float(learner.version),
                            "overlap_optimizer_steps": float(overlap),
                            **{f"restarts/{r}": float(n) for r, n in restarts.items()}}
                if cfg.runtime.audit_samples:
                    metrics["audit_keys"] = update.segment_keys
                admission.forget(step)
                step += 1
                _publish(backend, learner)
                on_step(step, metrics)
                update, collected, t0 = new_step(early.pop(step, []))
                lost, t_rollout, overlap = False, None, None
    except RestartsExhausted as e:  # the learner's state is the last completed step's unless it trained on the
        e.step_intact = None if update.started else step  # step in progress (async): then safe to checkpoint
        raise
    return step
