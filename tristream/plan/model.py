"""``tristream plan predict``: a discrete-event model of the pipeline (SimPy), driven by measured costs.

The model has the runtime's roles and rules, several of them literally the runtime's own objects:

- **EnvWorker**: one thread per worker (its groups take turns on it); at a rollout's start it resets every env,
  then each group sends its active envs' request, waits for the reply, executes the chunks (``env_step_s``
  per env step), sends the segments it finished, and, with the latency model, sleeps the slowest env's
  draw before the next request (``envs/latency.py``: a group steps like one vectorised simulator).
- **InferenceWorker**: the batching rule of ``runtime/inference.py``: lockstep (every running group of the
  oldest step asked) in sync, else fire at ``batch_max`` samples (a request never split) or when the oldest
  request waited ``batch_timeout_ms``; weights swap between batches; a request waits for its
  ``min_version``.
- **Learner**: the loop of ``runtime/pipeline.py``: the real :class:`~tristream.runtime.admission.Admission`
  admits rollouts (the lag bound); messages are read before each optimizer step; the step's update cuts
  mini-batches from the real :class:`~tristream.runtime.stream_order.StreamOrder`'s canonical order (pass 1
  as it is released in async, every pass after the rollout otherwise), passes 2.. once the step is complete;
  a pass-1 mini-batch holding stale samples pays a proximal forward over all of its samples (every pass-1
  mini-batch, where the loss or low-bit rollouts ask); weights are published once per global step.
- **Cores**: processor sharing. Work is cut into quanta of a few milliseconds, each holding one core
  (``simpy.Resource``) and queueing behind the others, so runnable roles share the cores round-robin as the
  OS scheduler shares them; a quantum runs at the measured co-run speed of as many busy cores. The learner's
  optimizer steps run as ``run.torch_threads`` threads that each queue for a core, at the speed measured with
  that many threads on free cores: on a busy machine a two-thread learner takes a larger share of the cores,
  and burns more CPU per sample, than a one-thread one. Sleeping (the latency model) holds no core.
- **GPUs** (a machine with ``gpus > 0``): forward passes and optimizer steps run on a GPU at ``gpu_speedup``
  times the measured CPU speed; env workers and the roles' Python work stay on the CPU cores.

What is not modelled is listed in docs/planning.md ("The model"), beside the predictions compared with
``tristream bench throughput``.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import simpy

from tristream.plan.costs import StageCosts
from tristream.plan.machine import Machine
from tristream.runtime.admission import Admission
from tristream.runtime.stream_order import StreamOrder

QUANTUM_S = 0.004  # about the slice the Linux scheduler gives each of a few runnable processes


@dataclass(frozen=True)
class Workload:
    """What the model needs of a config (:meth:`from_config`): the shard plan, batching, modes, the update."""

    mode: str
    num_envs: int
    env_workers: int
    groups_per_worker: int
    chunk_len: int
    segment_len: int = 8
    episodes_per_env: int = 1
    steps_per_env: int = 0
    batch_max: int = 0  # resolved: 0 = lockstep
    batch_timeout_ms: float = 5.0
    max_lag: int = 1
    global_batch: int = 256
    update_epochs: int = 2
    by_group: bool = False
    group_size: int = 1
    shuffle_samples: bool = False
    recompute_stale: bool = True  # algo.ratio_reference=proximal: a mini-batch holding stale samples recomputes them
    always_proximal: bool = False  # every pass-1 mini-batch recomputes (the loss asks, or low-bit rollouts)
    torch_threads: int = 1
    inference_threads: int = 1
    step_latency_ms: float = 0.0
    reset_latency_ms: float = 0.0
    latency_sigma: float = 1.0

    @classmethod
    def from_config(cls, cfg) -> "Workload":
        from tristream.algos.registry import loss_spec
        from tristream.runtime.roles import batch_max
        r, rt, a, e = cfg.rollout, cfg.runtime, cfg.algo, cfg.env
        # runtime/update.py: the loss's spec, or a learner that tracks the rollout-vs-learner mismatch
        always = (loss_spec(a.loss).proximal == "always" or r.weights != "fp32"
                  or a.rollout_is_cap is not None)
        return cls(mode=rt.mode, num_envs=r.num_envs, env_workers=rt.env_workers,
                   groups_per_worker=rt.groups_per_worker,
                   chunk_len=cfg.policy.chunk_len, segment_len=r.segment_len, episodes_per_env=r.episodes_per_env,
                   steps_per_env=r.steps_per_env, batch_max=batch_max(cfg), batch_timeout_ms=rt.batch_timeout_ms,
                   max_lag=rt.max_policy_lag, global_batch=a.global_batch, update_epochs=a.update_epochs,
                   by_group=a.advantage == "grpo", group_size=r.group_size, shuffle_samples=a.shuffle == "samples",
                   recompute_stale=a.ratio_reference == "proximal", always_proximal=always,
                   torch_threads=cfg.run.torch_threads,
                   inference_threads=rt.inference_threads, step_latency_ms=e.step_latency_ms,
                   reset_latency_ms=e.reset_latency_ms, latency_sigma=e.latency_sigma)

    @property
    def groups(self) -> int:
        return self.env_workers * self.groups_per_worker

    @property
    def envs_per_group(self) -> int:
        return self.num_envs // self.groups


@dataclass
class Prediction:
    env_steps_per_s: float
    seconds: float
    env_steps: int
    busy_fraction: dict[str, float]
    inference_batch_mean: float
    inference_queue_delay_ms: float
    policy_lag_mean: float
    policy_lag_max: int
    step_s: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _Segment:
    """What the learner's side needs of a segment: StreamOrder reads env_id, episode_done, rollout_end."""

    env_id: int
    length: int  # decisions
    env_steps: int
    version: int
    global_step: int
    episode_done: bool
    rollout_end: bool = False


@dataclass
class _Request:
    worker: int
    group: int
    step: int
    n: int
    min_version: int
    sent: float
    reply: simpy.Event


class _Cores:
    """Processor sharing over ``n`` cores: work runs in quanta, each holding one core and queueing behind the
    others. Work on ``k`` threads runs each quantum as ``k`` threads that queue for cores separately, as the
    OS schedules them; the quantum ends when every thread has had its slice, and it advances the work at the
    speed measured on ``k`` free cores (so ``k`` threads burn ``k / speed(k)`` times the CPU of one)."""

    def __init__(self, sim: simpy.Environment, n: int, busy: dict[str, float], speedup: float = 1.0,
                 slowdown: Callable[[int], float] = lambda k: 1.0):
        self.sim, self.res, self.busy, self.speedup = sim, simpy.Resource(sim, capacity=n), busy, speedup
        self.slowdown = slowdown  # busy cores -> how much slower each runs (measured: StageCosts.corun_slowdown)

    def _slice(self, dt: float) -> Iterator[simpy.Event]:
        with self.res.request() as core:
            yield core
            yield self.sim.timeout(dt)

    def work(self, role: str, seconds: float, threads: int = 1,
             speed: Callable[[int], float] = lambda k: 1.0) -> Iterator[simpy.Event]:
        left, rate, t0 = seconds / self.speedup, speed(threads), self.sim.now
        while left > 1e-12:
            # the cores busy while this quantum runs: as many as are taken or asked for, up to all of them
            slow = self.slowdown(min(self.res.capacity, self.res.count + len(self.res.queue) + threads))
            dt = min(QUANTUM_S, left * slow / rate)
            if threads == 1:
                yield from self._slice(dt)
            else:
                yield self.sim.all_of([self.sim.process(self._slice(dt)) for _ in range(threads)])
            left -= dt * rate / slow
        self.busy[role] += self.sim.now - t0  # wall time inside the work, descheduled or not, as a trace span


class _Sim:
    def __init__(self, costs: StageCosts, wl: Workload, machine: Machine, warmup: int, total_steps: int, seed: int):
        self.c, self.wl, self.m = costs, wl, machine
        self.warmup, self.busy_at_warmup = warmup, {}
        self.sim = simpy.Environment()
        self.rng = np.random.default_rng(seed)
        self.busy: dict[str, float] = defaultdict(float)
        self.cpus = [_Cores(self.sim, machine.cores, self.busy, slowdown=costs.slowdown) for _ in range(machine.nodes)]
        self.gpu = _Cores(self.sim, machine.gpus, self.busy, machine.gpu_speedup) if machine.gpus else None
        self.total_steps = total_steps
        # inference
        self.inf_pending: list[_Request] = []
        self.inf_weights: list[int] = []
        self.inf_done: dict[int, set[int]] = defaultdict(set)
        self.inf_version = -1
        self.inf_wake = self.sim.event()
        self.batch_sizes: list[int] = []
        self.queue_delays: list[float] = []
        # learner
        self.learner_inbox: list[tuple[str, Any]] = []
        self.learner_wake = self.sim.event()
        self.worker_inbox = [simpy.Store(self.sim) for _ in range(wl.env_workers)]
        self.worker_lock = [simpy.Resource(self.sim, 1) for _ in range(wl.env_workers)]
        self.step_end: list[float] = []
        self.step_env_steps: list[int] = []
        self.lags: dict[int, list[tuple[int, int]]] = defaultdict(list)  # global step -> [(lag, samples)] trained

    # --- helpers ------------------------------------------------------------------------------
    @property
    def measuring(self) -> bool:
        """The warm-up steps are over: batch sizes, waits and lags count from here, as in the benchmark."""
        return len(self.step_end) >= self.warmup

    def node_of(self, worker: int) -> int:
        return worker * self.m.nodes // self.wl.env_workers

    def transfer_s(self, worker: int, nbytes: float) -> float:
        """Wall time of moving ``nbytes`` from ``worker``'s node to the first node (0 on the same node)."""
        return 0.0 if self.node_of(worker) == 0 else nbytes * 8 / (self.m.link_gbps * 1e9)

    def latency(self, median_ms: float, n: int) -> float:
        if median_ms <= 0 or n <= 0:
            return 0.0
        return float(median_ms / 1000.0 * np.exp(self.wl.latency_sigma * self.rng.standard_normal(n)).sum())

    def episode_length(self) -> int:
        if not self.c.episode_steps:  # no episode ended in the probe: longer than any rollout
            return 1 << 40
        return int(self.c.episode_steps[self.rng.integers(len(self.c.episode_steps))])

    def to_learner(self, kind: str, payload: Any) -> None:
        self.learner_inbox.append((kind, payload))
        if not self.learner_wake.triggered:
            self.learner_wake.succeed()

    def to_inference(self, kind: str, payload: Any) -> None:
        if kind == "request":
            self.inf_pending.append(payload)
        elif kind == "weights":
            self.inf_weights.append(payload)
        else:
            self.inf_done[payload[0]].add(payload[1])
        if not self.inf_wake.triggered:
            self.inf_wake.succeed()

    def compute(self, role: str, seconds: float, *, node: int = 0, threads: int = 1,
                speed: Callable[[int], float] = lambda k: 1.0, accelerated: bool = False):
        """``seconds`` of one-thread CPU work of ``role`` on ``threads`` threads that run ``speed(threads)``
        times as fast as one on free cores; on a GPU when ``accelerated`` and the machine has one."""
        if accelerated and self.gpu is not None:
            return self.gpu.work(role, seconds)
        return self.cpus[node].work(role, seconds, threads, speed)

    def learner_speed(self, threads: int) -> float:
        return self.c.learner_step(self.c.global_batch, 1) / self.c.learner_step(self.c.global_batch, threads)

    # --- env worker ------------------------------------------------------------------------------
    def env_worker(self, w: int) -> Iterator[simpy.Event]:
        wl, c = self.wl, self.c
        role, node = f"env_worker{w}", self.node_of(w)
        groups = [w * wl.groups_per_worker + g for g in range(wl.groups_per_worker)]
        envs = {g: list(range(g * wl.envs_per_group, (g + 1) * wl.envs_per_group)) for g in groups}
        left: dict[int, int] = {}  # env -> env steps left in its episode (kept across steps: fixed horizon)
        while True:
            step, min_version = yield self.worker_inbox[w].get()
            with self.worker_lock[w].request() as lock:
                yield lock
                fresh = {e for g in groups for e in envs[g] if not wl.steps_per_env or e not in left}
                for e in fresh:
                    left[e] = self.episode_length()
                yield from self.compute(role, c.env_reset_s * len(fresh) + c.message_s / 2 * len(groups), node=node)
            loops = [self.sim.process(self.group(w, g, envs[g], step, min_version, left,
                                                 max((self.latency(wl.reset_latency_ms, 1) for e in envs[g]
                                                      if e in fresh), default=0.0)))
                     for g in groups]
            yield self.sim.all_of(loops)
            self.to_learner("done", (w, step))

    def group(self, w: int, g: int, envs: list[int], step: int, min_version: int, left: dict[int, int],
              owed: float) -> Iterator[simpy.Event]:
        wl, c, K = self.wl, self.c, self.wl.chunk_len
        role, node = f"env_worker{w}", self.node_of(w)
        episodes = {e: wl.episodes_per_env if not wl.steps_per_env else 1 << 30 for e in envs}
        decisions = {e: wl.steps_per_env or -1 for e in envs}
        seg: dict[int, list[tuple[int, int]]] = {e: [] for e in envs}  # env -> its open segment's (env steps, version)
        while True:
            if owed > 0:
                yield self.sim.timeout(owed)
            active = [e for e in envs if episodes[e] > 0 and decisions[e] != 0]
            if not active:
                self.to_inference("group_done", (step, g))
                return
            req = _Request(w, g, step, len(active), min_version, self.sim.now, self.sim.event())
            yield self.sim.timeout(self.transfer_s(w, len(active) * c.segment_bytes))
            self.to_inference("request", req)
            version = yield req.reply
            finished: list[_Segment] = []
            steps, owed = 0, 0.0
            for e in active:
                n = min(K, left[e])
                left[e] -= n
                steps += n
                seg[e].append((n, version))
                decisions[e] -= decisions[e] > 0
                done, end = left[e] == 0, decisions[e] == 0
                env_owed = self.latency(wl.step_latency_ms, n)
                if done or end or len(seg[e]) >= wl.segment_len:
                    finished.append(_Segment(e, len(seg[e]), sum(s for s, _ in seg[e]), min(v for _, v in seg[e]),
                                             step, done, end))
                    seg[e] = []
                if done:
                    episodes[e] -= 1
                    if episodes[e] > 0 and not end:  # the next episode starts now (its cost is in env_step_s)
                        left[e] = self.episode_length()
                        env_owed += self.latency(wl.reset_latency_ms, 1)
                    else:  # the next rollout resets it
                        del left[e]
                owed = max(owed, env_owed)
            samples = sum(s.length for s in finished)
            with self.worker_lock[w].request() as lock:
                yield lock
                yield from self.compute(role, c.env_step_s * steps + c.message_s + c.segment_pickle_s * samples,
                                        node=node)
            if finished:
                yield self.sim.timeout(self.transfer_s(w, samples * c.segment_bytes))
                self.to_learner("segments", finished)

    # --- inference -------------------------------------------------------------------------------
    def ready_batch(self) -> list[_Request] | None:
        servable = [r for r in self.inf_pending if r.min_version <= self.inf_version]
        if not servable:
            return None
        if self.wl.batch_max == 0:
            step = min(r.step for r in servable)
            batch = [r for r in servable if r.step == step]
            if len(batch) + len(self.inf_done[step]) < self.wl.groups:
                return None
        else:
            n = sum(r.n for r in servable)
            waited = self.sim.now - min(r.sent for r in servable)
            if n < self.wl.batch_max and waited < self.wl.batch_timeout_ms / 1000.0 - 1e-12:
                return None
            batch, n = [], 0
            for r in servable:
                if n >= self.wl.batch_max:
                    break
                batch.append(r)
                n += r.n
        self.inf_pending = [r for r in self.inf_pending if r not in batch]
        return batch

    def inference(self) -> Iterator[simpy.Event]:
        c = self.c
        while True:
            if self.inf_weights:
                version = max(self.inf_weights)
                self.inf_weights.clear()
                yield from self.compute("inference", c.load_s)
                self.inf_version = max(self.inf_version, version)
            batch = self.ready_batch()
            if batch is None:
                self.inf_wake = self.sim.event()
                servable = [r for r in self.inf_pending if r.min_version <= self.inf_version]
                if self.wl.batch_max and servable:
                    due = min(r.sent for r in servable) + self.wl.batch_timeout_ms / 1000.0 - self.sim.now
                    yield self.inf_wake | self.sim.timeout(max(due, 0.0))
                else:
                    yield self.inf_wake
                continue
            n = sum(r.n for r in batch)
            if self.measuring:
                self.batch_sizes.append(n)
                self.queue_delays += [self.sim.now - r.sent for r in batch]
            yield from self.compute("inference", c.serve_overhead_s + c.message_s * len(batch))  # Python, one thread
            yield from self.compute("inference", c.forward(n), threads=self.wl.inference_threads,
                                    speed=c.forward_speedup, accelerated=True)
            for r in batch:
                r.reply.succeed(self.inf_version)

    # --- learner ---------------------------------------------------------------------------------
    def learner(self) -> Iterator[simpy.Event]:
        wl, c = self.wl, self.c
        streamed = wl.mode == "async"
        admission = Admission(wl.env_workers, max_lag=wl.max_lag if streamed else 0, start_step=0,
                              total_steps=self.total_steps)
        version, step = 0, 0
        yield from self.publish(version)
        update = _Update(wl, streamed)
        collected: list[_Segment] = []
        early: dict[int, list[_Segment]] = defaultdict(list)
        while step < self.total_steps:
            for w, j in admission.admit(step):
                self.worker_inbox[w].put((j, version))
            over = admission.rollout_over(step)
            if over and not update.closed:
                if not streamed:
                    yield from self.compute("learner", c.learner_prepare_s * sum(s.length for s in collected))
                    update.add(collected)
                update.close()
            if self.learner_inbox:
                kind, payload = self.learner_inbox.pop(0)
                if kind == "segments":
                    n = sum(s.length for s in payload)
                    ahead = payload[0].global_step != step
                    yield from self.compute("learner", c.message_s / 2 + c.segment_unpickle_s * n
                                            + (c.learner_prepare_s * n if streamed and not ahead else 0.0))
                    if ahead:
                        early[payload[0].global_step] += payload
                    else:
                        collected += payload
                        if streamed:
                            update.add(payload)
                else:
                    admission.finished(*payload)
            elif update.pending:
                n, lags = update.next_batch(version)
                if self.measuring:
                    self.lags[step] += lags
                # runtime/update.py: a pass-1 mini-batch holding a stale sample recomputes the whole batch's
                # proximal log-probs (or every pass-1 batch does, when the loss or low-bit rollouts ask)
                recompute = lags and (wl.always_proximal or (wl.recompute_stale and any(lag for lag, _ in lags)))
                work = c.learner_step(n, 1) + (c.learner_proximal_s * n if recompute else 0.0)
                scale = c.learner_update_scale
                yield from self.compute("learner", work * max(0.0, scale - 1.0))  # reshuffles and copies, one thread
                yield from self.compute("learner", work * min(1.0, scale), threads=wl.torch_threads,
                                        speed=self.learner_speed, accelerated=True)
            elif over:
                admission.forget(step)
                step += 1
                version += 1
                self.step_end.append(self.sim.now)
                if len(self.step_end) == self.warmup:  # the measured window starts here, as in the benchmark
                    self.busy_at_warmup = dict(self.busy)
                self.step_env_steps.append(sum(s.env_steps for s in collected))
                yield from self.publish(version)
                update = _Update(wl, streamed)
                collected = list(early.pop(step, []))
                if streamed and collected:  # segments that arrived ahead of their step are prepared now
                    yield from self.compute("learner", c.learner_prepare_s * sum(s.length for s in collected))
                    update.add(collected)
            else:
                self.learner_wake = self.sim.event()
                yield self.learner_wake

    def publish(self, version: int) -> Iterator[simpy.Event]:
        yield from self.compute("learner", self.c.publish_s)
        self.to_inference("weights", version)

    def run(self) -> None:
        for w in range(self.wl.env_workers):
            self.sim.process(self.env_worker(w))
        self.sim.process(self.inference())
        done = self.sim.process(self.learner())
        self.sim.run(until=done)


class _Update:
    """The step's update as the learner cuts it (runtime/update.py): pass 1 from the canonical order as it
    is released (async) or after the rollout; passes 2.. over the complete step."""

    def __init__(self, wl: Workload, streamed: bool):
        self.wl = wl
        self.order = StreamOrder(range(wl.num_envs) if streamed else None, episodes_per_env=wl.episodes_per_env,
                                 group_size=wl.group_size, by_group=wl.by_group, fixed_horizon=wl.steps_per_env > 0)
        self.ready: list[_Segment] = []  # released, not yet cut
        self.queue: list[list[tuple[int, int]]] = []  # mini-batches: [(version, samples)]
        self.samples = 0
        self.closed = False
        self.passes_left = wl.update_epochs - 1

    def add(self, segments: list[_Segment]) -> None:
        self.order.add(segments)
        self.ready += self.order.release()
        if not self.wl.shuffle_samples:
            self._cut(final=False)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ready += self.order.flush()
        self._cut(final=True)

    def _cut(self, final: bool) -> None:
        """Pass-1 mini-batches of ``global_batch`` samples from the released prefix (a segment straddling a
        boundary is split there); at the end, the short rest."""
        B = self.wl.global_batch
        while self.ready:
            have = sum(s.length for s in self.ready)
            if have < B and not final:
                return
            batch, n = [], 0
            while self.ready and n < B:
                s = self.ready[0]
                take = min(s.length, B - n)
                batch.append((s.version, take))
                n += take
                if take == s.length:
                    self.ready.pop(0)
                else:
                    self.ready[0] = _Segment(s.env_id, s.length - take, 0, s.version, s.global_step, s.episode_done)
            self.samples += n
            self.queue.append(batch)

    @property
    def pending(self) -> bool:
        return bool(self.queue) or (self.closed and self.passes_left > 0 and self.samples > 0)

    def next_batch(self, learner_version: int) -> tuple[int, list[tuple[int, int]]]:
        """The next optimizer step's samples and, for pass 1, (lag, samples) of what it trains."""
        if self.queue:
            batch = self.queue.pop(0)
            return sum(k for _, k in batch), [(learner_version - v, k) for v, k in batch]
        self.passes_left -= 1  # passes 2..: the complete step again, cut the same way
        B = self.wl.global_batch
        full, rest = divmod(self.samples, B)
        self.queue = [[(learner_version, B)]] * full + ([[(learner_version, rest)]] if rest else [])
        batch = self.queue.pop(0)
        return sum(k for _, k in batch), []


def simulate(costs: StageCosts, wl: Workload, machine: Machine | None = None, *, warmup: int = 1, steps: int = 3,
             seed: int = 0) -> Prediction:
    """Predicted throughput of ``wl`` on ``machine``, measured as ``tristream bench throughput`` measures it:
    env steps of ``steps`` global steps after ``warmup`` unmeasured ones, over their wall time; batch sizes,
    waits, busy fractions and lags over the same window (lag: the mean over steps of each step's mean)."""
    if warmup < 1 or steps < 1:
        raise ValueError(f"warmup={warmup} and steps={steps} must both be >= 1")
    if wl.num_envs % wl.groups:
        raise ValueError(f"num_envs={wl.num_envs} must divide into env_workers x groups_per_worker = {wl.groups}")
    machine = machine or Machine()
    s = _Sim(costs, wl, machine, warmup, warmup + steps, seed)
    s.run()
    t0 = s.step_end[warmup - 1]
    seconds = s.step_end[-1] - t0
    env_steps = sum(s.step_env_steps[warmup:])
    step_lags = [sum(lag * k for lag, k in v) / max(sum(k for _, k in v), 1) for v in s.lags.values() if v]
    return Prediction(
        env_steps_per_s=env_steps / seconds, seconds=seconds, env_steps=env_steps,
        busy_fraction={r: (b - s.busy_at_warmup.get(r, 0.0)) / seconds for r, b in sorted(s.busy.items())},
        inference_batch_mean=float(np.mean(s.batch_sizes)) if s.batch_sizes else 0.0,
        inference_queue_delay_ms=1000 * float(np.median(s.queue_delays)) if s.queue_delays else 0.0,
        policy_lag_mean=float(np.mean(step_lags)) if step_lags else 0.0,
        policy_lag_max=max((lag for v in s.lags.values() for lag, _ in v), default=0),
        step_s=list(np.diff([0.0, *s.step_end])))


def predict(cfg, costs: StageCosts, machine: Machine | None = None, *, warmup: int = 1, steps: int = 3) -> Prediction:
    """:func:`simulate` for a config (its workload, seeded by ``run.seed``)."""
    return simulate(costs, Workload.from_config(cfg), machine, warmup=warmup, steps=steps, seed=cfg.run.seed)
