"""The wiring: who sends what to whom, in one place (read top to bottom).

    Learner --Weights(version)------------------> InferenceWorker
    pipeline --StartRollout(step, min_version)--> EnvWorker x W
    EnvWorker --ObsRequest(group)---------------> InferenceWorker --ActionReply--> EnvWorker
    EnvWorker --SegmentBatch, RolloutDone-------> Learner (this process)

In ``sync`` mode one global step is: publish weights v, start every env worker's episodes with
min_version v, stream segments in until every worker reports RolloutDone, update (v -> v+1).
The inference batcher (runtime.batch_max = 0) answers all running groups in one lockstep batch.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Callable

import numpy as np

from tristream.runtime.backends import make_backend
from tristream.runtime.learner import Learner
from tristream.runtime.messages import RolloutDone, SegmentBatch, StartRollout, Weights
from tristream.runtime.roles import shard_plan
from tristream.types import Segment


class StopRequested(Exception):
    """A signal asked the run to stop; the unfinished rollout is dropped (it reruns identically on resume)."""


def run_rollout(backend, cfg, global_step: int, version: int,
                should_stop: Callable[[], bool] = lambda: False) -> tuple[list[Segment], dict[str, Any]]:
    """Start one global step's episodes on every env worker and gather its segments."""
    plan = shard_plan(cfg)
    backend.send_env_workers(StartRollout(global_step, version, cfg.rollout.episodes_per_env))
    segments: list[Segment] = []
    done: dict[int, dict] = {}
    while len(done) < plan.env_workers:
        if should_stop():
            raise StopRequested
        msg = backend.learner_get(timeout=cfg.runtime.timeout_s)
        if isinstance(msg, SegmentBatch):
            segments.extend(msg.segments)
        elif isinstance(msg, RolloutDone) and msg.global_step == global_step:
            done[msg.worker_id] = msg.stats
    # Arrival order depends on process timing; training order must not.
    segments.sort(key=lambda s: (s.env_id, s.policy_version[0], s.episode_seed, s.global_step, -s.length))
    return segments, {"workers": done}


def episode_metrics(segments: list[Segment]) -> dict[str, float]:
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
    versions = np.concatenate([s.policy_version for s in segments]) if segments else np.zeros(1)
    return out | {"policy_version_min": float(versions.min()), "policy_version_max": float(versions.max())}


def train_loop(cfg, policy, env_spec, *, learner: Learner, start_step: int,
               on_step: Callable[[int, dict[str, Any]], None],
               should_stop: Callable[[], bool] = lambda: False) -> int:
    """Run global steps ``start_step .. cfg.train.steps - 1``; returns the next step to run.

    ``on_step(step, metrics)`` logs and checkpoints. ``should_stop`` is checked between steps (signals).
    """
    backend = make_backend(cfg, env_spec)
    step = start_step
    try:
        while step < cfg.train.steps and not should_stop():
            t0 = time.perf_counter()
            backend.send_inference(Weights(learner.version, {k: v.numpy() for k, v in learner.weights().items()}))
            try:
                segments, _ = run_rollout(backend, cfg, step, learner.version, should_stop)
            except StopRequested:
                break
            t_rollout = time.perf_counter() - t0
            metrics = episode_metrics(segments)
            lag = learner.version - np.concatenate([s.policy_version for s in segments])
            metrics |= {"policy_lag_mean": float(lag.mean()), "policy_lag_max": float(lag.max())}
            metrics |= learner.update(segments)
            elapsed = time.perf_counter() - t0
            metrics |= {"rollout_s": t_rollout, "update_s": elapsed - t_rollout, "step_s": elapsed,
                        "env_steps_per_s": metrics["env_steps"] / elapsed, "version": float(learner.version)}
            step += 1
            on_step(step, metrics)
    finally:
        backend.close()
    return step
