"""``tristream plan measure``: what each stage of the pipeline costs on this machine, from short probes.

Every figure is one role doing its work alone, measured with the configured env, policy and algorithm;
the pipeline model (:mod:`tristream.plan.model`) adds the contention and the waiting. Torch work is timed
on one thread (the model applies the measured speed of more threads), except where a field says so.

- **env** (:func:`probe_rollout`): two rollouts of the configured envs on the serial backend (every role in
  this process, so nothing competes): the first warms the renderer up, the second is timed from the env
  workers' own spans. Gives seconds per env step (the step, rendering, resets inside the rollout, the
  worker's bookkeeping and its requests), seconds per reset at a rollout's start, and the episode lengths
  the configured policy plays. The latency model is off: it is sleep, not work, and the model draws it.
- **inference** (:func:`probe_inference`): one forward pass (``policy.act``, sampling as the worker does) at
  batch sizes 1, 2, 4, ... up to every env, the largest on more threads, and what the worker adds per batch.
- **learner** (:func:`probe_learner`): preparing samples, one optimizer step on a full and a quarter
  mini-batch at 1 thread and at ``run.torch_threads``, a whole step's update against its single steps, and
  the proximal log-prob forward.
- **transfer** (:func:`probe_transfer`): pickling segments, one message through a multiprocessing queue, one
  weight publication.
- **cores** (:func:`corun_slowdown`) and **memory** (:func:`_env_memory`).
"""
from __future__ import annotations

import copy
import inspect
import multiprocessing as mp
import os
import pickle
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from tristream.bench.variants import with_overrides
from tristream.plan.costs import StageCosts, interpolate, step_cost, workload_of
from tristream.plan.machine import Machine

Log = Callable[[str], None]


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _env_memory(args) -> tuple[float, float]:
    """In a fresh process, as an env worker's: resident MB of the process with its first env (renderer
    contexts and all), less one env; and the MB each further env adds."""
    env_cfg, n = args
    from tristream.envs.from_config import env_from_config
    import tristream.runtime.env_worker  # noqa: F401
    envs = [env_from_config(env_cfg, 0, True)]
    envs[0].reset(seed=0)
    first = _rss_mb()
    for i in range(1, n + 1):
        envs.append(env_from_config(env_cfg, i, True))
        envs[-1].reset(seed=i)
    per_env = max(0.0, (_rss_mb() - first) / n)
    for e in envs:
        e.close()
    return first - per_env, per_env


def _env_work(args) -> float:
    """Seconds one process takes to step ``n`` envs ``steps`` times each (CPU-bound, zero-cost policy)."""
    from tristream.envs.throughput import env_only_throughput
    from tristream.envs.from_config import env_kwargs
    env_cfg, n, steps = args
    return env_only_throughput(env_cfg.name, num_envs=n, steps=steps, **env_kwargs(env_cfg))["seconds"]


def corun_slowdown(env_cfg, cores: int, seconds: float = 3.0, log: Log = print) -> dict[int, float]:
    """How much slower each process steps envs when ``k`` processes do so at once, for k = 1, half the cores
    and all of them (shared caches, memory bandwidth, a virtual machine's cores sharing physical ones): the
    model's cores run at that speed while that many are busy, linear in between. Each count is timed between
    two runs of one process alone, so a machine whose speed drifts meanwhile does not read as a slowdown (or a
    speed-up, which is taken as none)."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        probe = pool.map(_env_work, [(env_cfg, 4, 20)])[0]
    steps = max(20, int(20 * seconds / max(probe, 1e-3)))
    counts = sorted({max(2, cores // 2), cores} - {1}) if cores > 1 else []
    out = {1: 1.0}
    for k in counts:
        with ctx.Pool(k) as pool:
            before = pool.map(_env_work, [(env_cfg, 4, steps)])[0]
            together = statistics.mean(pool.map(_env_work, [(env_cfg, 4, steps)] * k))
            after = pool.map(_env_work, [(env_cfg, 4, steps)])[0]
        out[k] = max(1.0, together / ((before + after) / 2))
    log("[plan] cores: " + ", ".join(f"{k} busy: {v:.2f}x slower" for k, v in out.items()))
    return out


def probe_config(cfg):
    """The serial, lockstep, latency-free version of ``cfg``, every step training the policy (as
    ``bench throughput`` measures it): the roles' costs alone."""
    return with_overrides(cfg, ["runtime.backend=serial", "runtime.mode=sync", "env.step_latency_ms=0",
                                "env.reset_latency_ms=0", "algo.critic_warmup=0"])


def _rollout(backend, learner, step: int, workers: int, steps_per_env: int, episodes: int) -> list:
    """One global step's rollout on the serial backend; returns its segments."""
    from tristream.runtime.messages import RolloutDone, SegmentBatch, StartRollout, Weights
    backend.send_inference(Weights(learner.version, {k: v.numpy() for k, v in learner.weights().items()}))
    for w in range(workers):
        backend.send_env_worker(w, StartRollout(step, learner.version, episodes, steps_per_env))
    segments, done = [], 0
    while done < workers:
        msg = backend.learner_get(timeout=600.0)
        if isinstance(msg, SegmentBatch):
            segments += msg.segments
        elif isinstance(msg, RolloutDone):
            done += 1
    return segments


def _spans(telemetry: list, role_prefix: str, name: str) -> list[float]:
    return [b - a for t in telemetry if t.role.startswith(role_prefix) for n, a, b in t.spans if n == name]


def _served(telemetry: list) -> list[tuple[int, float]]:
    """(batch size, seconds) of each batch the inference worker served: its "forward" spans and its batch sizes
    travel in the same order in each telemetry message."""
    return [(size, b - a) for t in telemetry if t.role == "inference"
            for size, (_, a, b) in zip(t.stats.get("batch_sizes", []), [s for s in t.spans if s[0] == "forward"])]


def probe_rollout(probe, env_spec, policy, learner, log: Log) -> tuple[dict[str, Any], list, list]:
    """Env costs from a timed serial rollout; also returns its segments and the inference worker's batches
    (size, seconds), each a lockstep batch of every env still running."""
    from tristream.policies.from_config import policy_spec
    from tristream.runtime.backends.serial import SerialBackend
    from tristream.runtime.topology import Topology
    topology = Topology.from_config(probe)
    workers, r = topology.plan.env_workers, probe.rollout
    rss = _rss_mb()
    backend = SerialBackend(probe, topology, env_spec, policy_spec(policy))
    envs_mb = _rss_mb() - rss  # the serial backend's envs live in this process: not a learner's memory
    try:
        t = time.perf_counter()
        _rollout(backend, learner, 0, workers, r.steps_per_env, r.episodes_per_env)
        log(f"[plan] env probe: warm-up rollout {time.perf_counter() - t:.1f} s")
        backend.telemetry.record()
        segments = _rollout(backend, learner, 1, workers, r.steps_per_env, r.episodes_per_env)
        telemetry = backend.telemetry.stop()
    finally:
        backend.close()
    env_steps = sum(int(s.env_steps.sum()) for s in segments)
    # resets at a rollout's start ("reset" spans); fixed-horizon rollouts reset only envs whose episode ended
    resets = r.num_envs if not r.steps_per_env else sum(1 for s in segments if s.episode_done)
    episode_steps = [int(s.episode_length) for s in segments if s.episode_done]
    costs = {"env_step_s": sum(_spans(telemetry, "env_worker", "step")) / max(env_steps, 1),
             "env_reset_s": sum(_spans(telemetry, "env_worker", "reset")) / max(resets, 1),
             "episode_steps": episode_steps}
    log(f"[plan] env: {1000 * costs['env_step_s']:.2f} ms per env step, {1000 * costs['env_reset_s']:.1f} ms per "
        "reset, " + (f"episodes of {statistics.mean(episode_steps):.0f} env steps (mean of {len(episode_steps)})"
                     if episode_steps else "no episode ended in the rollout"))
    return costs | {"_envs_mb": envs_mb}, segments, _served(telemetry)


def probe_inference(policy, segments: list, num_envs: int, threads: int, served: list[tuple[int, float]],
                    repeats: int, log: Log) -> dict[str, Any]:
    from tristream.noise import RowNoise
    from tristream.types import ObsBatch
    obs = ObsBatch.concat([s.obs for s in segments])
    sizes = [n for n in sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, num_envs}) if n <= min(num_envs, len(obs))]
    row_noise = "noise" in inspect.signature(policy.act).parameters  # as the inference worker decides

    def forward(n: int) -> Callable[[], Any]:
        part = ObsBatch(images=obs.images[:n], state=obs.state[:n], instruction=list(obs.instruction[:n]))
        kwargs = {"noise": RowNoise(list(range(n)))} if row_noise else {}
        return lambda: policy.act(part.as_dict(), **kwargs)
    policy.eval()
    with torch.no_grad():
        torch.set_num_threads(1)
        forward(sizes[-1])()  # allocations and first-call work
        forward_s = {n: _median_time(forward(n), repeats) for n in sizes}
        largest = forward(sizes[-1])
        forward_threads_s = {1: forward_s[sizes[-1]]}
        for k in sorted({2, threads} - {1}):
            torch.set_num_threads(k)
            forward_threads_s[k] = _median_time(largest, repeats)
    torch.set_num_threads(1)
    # what the worker adds to the forward pass: each served batch against a bare forward of its size
    extra = [seconds - interpolate(forward_s, size) for size, seconds in served]
    serve_overhead_s = max(0.0, statistics.median(extra)) if extra else 0.0
    log("[plan] inference forward: " + ", ".join(f"{n}: {1000 * s:.1f} ms" for n, s in forward_s.items())
        + f"; {1000 * serve_overhead_s:.1f} ms more per batch in the worker; batch {sizes[-1]} on "
        + ", ".join(f"{k} threads {1000 * v:.1f} ms" for k, v in forward_threads_s.items() if k > 1))
    return {"forward_s": forward_s, "forward_threads_s": forward_threads_s, "serve_overhead_s": serve_overhead_s}


def probe_learner(cfg, learner, segments: list, repeats: int, log: Log) -> dict[str, Any]:
    from tristream.runtime.update import StepUpdate
    B, threads = cfg.algo.global_batch, cfg.run.torch_threads
    learner.policy.train()
    state = copy.deepcopy(learner.state_dict())
    torch.set_num_threads(1)
    t = time.perf_counter()
    samples = learner.prepare(segments)
    prepare_s = (time.perf_counter() - t) / len(samples)
    idx = np.arange(min(len(samples), B))
    quarter = idx[:max(1, len(idx) // 4)]
    step_s, fixed_s = {}, {}
    for k in sorted({1, threads}):
        torch.set_num_threads(k)
        learner.optimizer_step(samples, idx, B)  # the first step allocates
        full = _median_time(lambda: learner.optimizer_step(samples, idx, B), min(repeats, 3))
        small = _median_time(lambda: learner.optimizer_step(samples, quarter, B), min(repeats, 3))
        per_sample = max(0.0, (full - small) / max(len(idx) - len(quarter), 1))  # a line through both sizes
        fixed_s[k] = max(0.0, full - per_sample * len(idx))
        step_s[k] = fixed_s[k] + per_sample * B
        learner.load_state_dict(state)
    # a whole step's update at run.torch_threads, against the sum of its single optimizer steps
    torch.set_num_threads(threads)
    update = StepUpdate(learner)
    t = time.perf_counter()
    update.add(segments)
    update.close()
    prepared = time.perf_counter() - t
    optimizer_steps = 0
    t = time.perf_counter()
    while update.pending:
        update.train_step()
        optimizer_steps += 1
    trained = time.perf_counter() - t
    learner.load_state_dict(state)
    full_steps, rest = divmod(len(samples), B)
    passes = optimizer_steps / (full_steps + (rest > 0))  # fewer than update_epochs if algo.target_kl ended them
    short = step_cost(step_s[threads], fixed_s[threads], rest, B) if rest else 0.0
    single = passes * (full_steps * step_s[threads] + short)
    update_scale = trained / single if single else 1.0
    learner_mb = _rss_mb()
    torch.set_num_threads(1)
    part = samples.select(idx)
    proximal_s = _median_time(lambda: learner.proximal_logp(part), min(repeats, 3)) / len(idx)
    log(f"[plan] learner: prepare {1e3 * prepare_s:.2f} ms per sample; optimizer step on {B} samples "
        + ", ".join(f"{k} thread(s) {v:.2f} s (fixed {fixed_s[k]:.3f} s)" for k, v in step_s.items())
        + f"; a whole update {prepared + trained:.2f} s, its steps {update_scale:.2f}x single ones; "
        f"proximal log-probs {1e3 * proximal_s:.2f} ms per sample")
    return {"learner_prepare_s": prepare_s, "learner_step_s": step_s, "learner_step_fixed_s": fixed_s,
            "learner_update_scale": update_scale, "learner_proximal_s": proximal_s, "_learner_rss": learner_mb}


def probe_transfer(probe, env_spec, learner, policy, segments: list, repeats: int, log: Log) -> dict[str, Any]:
    from tristream.runtime.messages import ActionReply, SegmentBatch, Weights
    batch = SegmentBatch(0, segments[:16])
    k = sum(len(s.actions) for s in batch.segments)
    blob = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
    pickle_s = _median_time(lambda: pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL), repeats) / k
    unpickle_s = _median_time(lambda: pickle.loads(blob), repeats) / k
    reply = ActionReply(0, list(range(16)), np.zeros((16, probe.policy.chunk_len, env_spec.action_dim), np.float32),
                        np.zeros((16, 1), np.float32), np.zeros(16, np.float32), 0, 1)
    queue = mp.get_context("spawn").Queue()

    def round_trip() -> None:
        queue.put(reply)
        queue.get()
    round_trip()
    message_s = _median_time(round_trip, 20 * repeats)
    queue.close()
    weights = learner.weights()

    def publish() -> bytes:
        return pickle.dumps(Weights(1, {n: v.numpy() for n, v in weights.items()}), protocol=pickle.HIGHEST_PROTOCOL)
    wblob = publish()
    publish_s = _median_time(publish, repeats)
    load_s = _median_time(lambda: policy.load_state_dict({n: torch.as_tensor(v) for n, v in
                                                          pickle.loads(wblob).state_dict.items()}), repeats)
    log(f"[plan] transfer: segments {1e6 * (pickle_s + unpickle_s):.0f} us per sample ({len(blob) / k / 1024:.0f} kB), "
        f"message {1e6 * message_s:.0f} us, weights {1e3 * publish_s:.1f} + {1e3 * load_s:.1f} ms "
        f"({len(wblob) / 2**20:.1f} MB)")
    return {"segment_pickle_s": pickle_s, "segment_unpickle_s": unpickle_s, "segment_bytes": len(blob) / k,
            "message_s": message_s, "publish_s": publish_s, "load_s": load_s, "weight_bytes": len(wblob)}


def measure_costs(cfg, env_spec, *, repeats: int = 5, corun_seconds: float = 3.0, log: Log = print) -> StageCosts:
    """Run the probes (module docstring) for ``cfg``'s workload; about a minute on the default workload.
    ``corun_seconds``: how long each co-run measurement steps envs."""
    from tristream.provenance import run_meta
    from tristream.policies.from_config import apply_rl_options, build_policy
    from tristream.runtime.learner import Learner
    probe = probe_config(cfg)
    torch.manual_seed(cfg.run.seed)
    policy = build_policy(probe, env_spec)
    if cfg.train.init:
        from tristream.policies.io import load_policy
        policy.load_state_dict(load_policy(cfg.train.init).state_dict())
    apply_rl_options(probe, policy)  # run.precision: the costs of the forward passes the run will make
    learner = Learner(policy, probe.algo, seed=cfg.run.seed)
    inference_mb = _rss_mb()
    with mp.get_context("spawn").Pool(1) as pool:
        process_mb, env_mb = pool.map(_env_memory, [(probe.env, min(8, probe.rollout.num_envs))])[0]
    env, segments, served = probe_rollout(probe, env_spec, policy, learner, log)
    envs_mb = env.pop("_envs_mb")
    inference = probe_inference(policy, segments, probe.rollout.num_envs, cfg.runtime.inference_threads, served,
                                repeats, log)
    learning = probe_learner(probe, learner, segments, repeats, log)
    learner_mb = learning.pop("_learner_rss") - envs_mb
    transfer = probe_transfer(probe, env_spec, learner, policy, segments, repeats, log)
    corun = corun_slowdown(probe.env, Machine().cores, corun_seconds, log)
    torch.set_num_threads(cfg.run.torch_threads)
    return StageCosts(**env, **inference, **learning, **transfer, corun_slowdown=corun, env_mb=env_mb,
                      process_mb=process_mb, inference_mb=inference_mb, learner_mb=learner_mb,
                      global_batch=cfg.algo.global_batch, workload=workload_of(cfg), meta=run_meta())
