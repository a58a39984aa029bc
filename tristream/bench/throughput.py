"""``tristream bench throughput``: sync vs async-rollout vs async on the same workload, side by side.

Protocol (docs/benchmarks.md): every mode runs the same workload (env, policy, number of envs, global
batch, steps); runs are interleaved (A B C A B C ...) so machine drift cancels; each run starts its roles,
runs ``warmup`` global steps that are not measured, then ``steps`` measured global steps. Throughput is
env steps per wall-clock second over the measured steps (rollout and training together). Reported per
mode: median/min/max over repeats, the ratio of medians to sync, per-role busy fraction, the machine's
CPU utilisation, inference batch sizes and queueing delay, policy lag, learner inbox depth, peak memory
per role; plus the env-only ceiling (the same envs and processes driven by a zero-cost policy).
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import re
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from tristream.provenance import run_meta
from tristream.config.convert import to_dict
from tristream.config.loader import ConfigError, apply_overrides, config_from_dict
from tristream.metrics.plots import timeline
from tristream.metrics.trace import chrome_trace
from tristream.runtime.backends import make_backend
from tristream.runtime.learner import Learner
from tristream.runtime.pipeline import train_loop
from tristream.envs.from_config import env_kwargs
from tristream.policies.from_config import apply_rl_options, build_policy
from tristream.runtime.topology import Topology

MODES = ("sync", "async-rollout", "async")


# a language policy's extra figures (medians over repeats) and their columns
TEXT_FIGURES = ("tokens_per_s", "rollout_tokens_per_s", "accept_len", "rollout_logp_diff_mean", "rollout_kl")
TEXT_COLUMNS = (("tokens/s", 10), ("gen tok/s", 11), ("accept", 8), ("|dlogp|", 9), ("kl", 8))


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _env_only(args) -> dict:
    from tristream.envs.throughput import env_only_throughput
    env_cfg, n, steps = args
    return env_only_throughput(env_cfg.name, num_envs=n, steps=steps, **env_kwargs(env_cfg))


def env_only_ceiling(cfg, steps_per_worker: int = 4000) -> float:
    """Env steps/s of the same envs in the same number of processes, with a zero-cost policy (no latency
    model: the ceiling of the plain simulator)."""
    plan = Topology.from_config(cfg).plan
    n = plan.num_envs // plan.env_workers
    with mp.get_context("spawn").Pool(plan.env_workers) as pool:
        results = pool.map(_env_only, [(cfg.env, n, max(20, steps_per_worker // n))] * plan.env_workers)
    return sum(r["env_steps_per_s"] for r in results)


def mode_config(cfg, mode: str):
    """The config of one benchmarked mode, written ``MODE[@BACKEND][:KEY=VALUE]...``: ``async``,
    ``sync@ray`` (backends compared interleaved), ``async:runtime.max_policy_lag=2`` (a variant of a mode,
    with its own dotted overrides, compared interleaved with the others)."""
    name, *overrides = mode.split(":")
    base, _, backend = name.partition("@")
    if base not in MODES:
        raise ConfigError(f"bench throughput: unknown mode {base!r} in {mode!r}; valid: {', '.join(MODES)} "
                          "(written MODE[@BACKEND][:KEY=VALUE]...)")
    overrides += [f"runtime.mode={base}"] + ([f"runtime.backend={backend}"] if backend else [])
    return config_from_dict(type(cfg), apply_overrides(type(cfg), to_dict(cfg), overrides))


def _file_label(mode: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._-]+", "_", mode)


def _connect_ray(cfg) -> bool:
    from tristream.runtime.backends.ray_channels import connect
    return connect(cfg.ray)


def measure(cfg, env_spec, init_state: dict, warmup: int, steps: int) -> dict[str, Any]:
    """One run of one mode: start the roles, warm up, measure ``steps`` global steps."""
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=warmup + steps))
    torch.set_num_threads(cfg.run.torch_threads)  # the learner's threads, as `tristream train` sets them
    torch.manual_seed(cfg.run.seed)
    policy = build_policy(cfg, env_spec)
    policy.load_state_dict(init_state)
    apply_rl_options(cfg, policy)  # lm.qat and run.precision, as the learner in training
    learner = Learner(policy, cfg.algo, seed=cfg.run.seed + 2, rollout_mismatch=cfg.rollout.weights != "fp32")
    backend = make_backend(cfg, env_spec)
    marks: list[tuple[float, dict]] = []
    window: dict[str, Any] = {}

    def on_step(step: int, metrics: dict) -> None:
        now = time.time()
        metrics["learner_inbox_depth"] = backend.learner_inbox.qsize()
        marks.append((now, metrics))
        if step == warmup:
            window["t0"], window["cpu0"] = now, cpu_times()
            backend.telemetry.record()

    try:
        train_loop(cfg, policy, env_spec, learner=learner, start_step=0, on_step=on_step, backend=backend)
        t1, cpu1 = time.time(), cpu_times()
        backend.drain(0.5)
        telemetry = backend.telemetry.stop()
        latest = dict(backend.telemetry.latest)
    finally:
        backend.close()
    measured = [m for t, m in marks[warmup:]]
    seconds = t1 - window["t0"]
    busy = defaultdict(float)
    for t in telemetry:
        for _, a, b in t.spans:
            busy[t.role] += max(0.0, min(b, t1) - max(a, window["t0"]))
    sizes = [s for t in telemetry if t.role == "inference" for s in t.stats.get("batch_sizes", [])]
    delays = [d for t in telemetry if t.role == "inference" for d in t.stats.get("queue_delay_s", [])]
    env_steps = sum(m["env_steps"] for m in measured)
    if not env_steps:  # async closes a step whose rollout was lost with what arrived: possibly nothing
        raise RuntimeError(f"{cfg.runtime.mode}@{cfg.runtime.backend}: no env steps in the measured window: the "
                           f"roles kept failing (see the restart messages above)")
    cpu_util = (cpu1[0] - window["cpu0"][0]) / max(cpu1[1] - window["cpu0"][1], 1e-9)
    text = {}
    if env_spec.extra.get("text"):  # a language policy: its env steps are completions, also count the tokens
        text["tokens_per_s"] = sum(m["samples"] * m["tokens_per_sample"] for m in measured) / seconds
        text.update(rollout_figures(telemetry))
        for key in ("rollout_logp_diff_mean", "rollout_kl"):
            if key in measured[0]:
                text[key] = statistics.mean(m[key] for m in measured)
    return {
        **text,
        "env_steps_per_s": env_steps / seconds,
        "env_steps": env_steps,
        "seconds": seconds,
        "cpu_util": cpu_util,
        "busy_fraction": {role: v / seconds for role, v in sorted(busy.items())},
        "cpu_cores": cpu_cores(telemetry, cpu_util * (os.cpu_count() or 1)),
        "inference_batch_mean": statistics.mean(sizes) if sizes else 0.0,
        "inference_batch_max": max(sizes) if sizes else 0,
        "inference_queue_delay_ms": 1000 * statistics.median(delays) if delays else 0.0,
        "policy_lag_mean": statistics.mean(m["policy_lag_mean"] for m in measured),
        "policy_lag_max": max(m["policy_lag_max"] for m in measured),
        "learner_inbox_depth_max": max(m["learner_inbox_depth"] for m in measured),
        "peak_rss_mb": {role: s.get("peak_rss_mb", 0.0) for role, s in sorted(latest.items())},
        "success": statistics.mean(m.get("success", 0.0) for m in measured),
        "telemetry": telemetry,
        "window": (window["t0"], t1),
    }


def rollout_figures(telemetry: list) -> dict[str, float]:
    """A language policy's generation speed from the inference worker's counters: rollout_tokens_per_s
    (generated tokens per second of the worker's busy time, the decoding speed the pipeline got) and, for
    speculative sampling, accept_len (tokens emitted per verifying forward)."""
    counts: dict[str, float] = defaultdict(float)
    busy = 0.0
    for t in telemetry:
        if t.role == "inference":
            busy += sum(b - a for _, a, b in t.spans)
            for k, v in t.stats.get("rollout", {}).items():
                counts[k] += v
    out = {"rollout_tokens_per_s": counts["new_tokens"] / busy} if busy and counts["new_tokens"] else {}
    if counts["rounds"]:
        out["accept_len"] = counts["emitted"] / counts["rounds"]
    return out


def cpu_cores(telemetry: list, machine_cores: float) -> dict[str, float]:
    """CPU cores each role's process used (CPU seconds / wall seconds between its first and last telemetry
    of the window: all its threads, the backend's included), and what the rest of the machine used."""
    out: dict[str, float] = {}
    for role in sorted({t.role for t in telemetry}):
        pid = [t for t in telemetry if t.role == role][-1].pid  # a restarted role: its last process
        ts = [t.stats for t in telemetry if t.role == role and t.pid == pid and "cpu_s" in t.stats]
        if len(ts) >= 2 and ts[-1]["t"] > ts[0]["t"]:
            out[role] = (ts[-1]["cpu_s"] - ts[0]["cpu_s"]) / (ts[-1]["t"] - ts[0]["t"])
    out["rest of machine"] = max(0.0, machine_cores - sum(out.values()))
    return out


def describe_workload(cfg) -> dict[str, Any]:
    """What a throughput result was measured on (its ``workload``, less warm-up, steps and repeats)."""
    plan = Topology.from_config(cfg).plan
    return {"env": cfg.env.name, "tasks": list(cfg.env.tasks), "image_size": cfg.env.image_size,
            "num_envs": cfg.rollout.num_envs, "env_workers": plan.env_workers,
            "groups_per_worker": cfg.runtime.groups_per_worker, "policy": cfg.policy.name, "head": cfg.policy.head,
            "chunk_len": cfg.policy.chunk_len, "advantage": cfg.algo.advantage, "group_size": cfg.rollout.group_size,
            "global_batch": cfg.algo.global_batch, "update_epochs": cfg.algo.update_epochs,
            "max_policy_lag": cfg.runtime.max_policy_lag, "step_latency_ms": cfg.env.step_latency_ms,
            "latency_sigma": cfg.env.latency_sigma, "backend": cfg.runtime.backend,
            "init": cfg.train.init or "fresh policy"}


def bench_throughput(cfg, env_spec, out_dir: str | Path, *, modes=MODES, repeats: int = 3, warmup: int = 1,
                     steps: int = 3, ceiling_steps: int = 4000) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.algo.critic_warmup:  # measure the policy-training steps that make up most of a run
        print(f"[tristream] algo.critic_warmup={cfg.algo.critic_warmup} -> 0: every measured step trains the policy")
        cfg = dataclasses.replace(cfg, algo=dataclasses.replace(cfg.algo, critic_warmup=0))
    configs = {m: mode_config(cfg, m) for m in modes}  # bad modes and keys fail here, before any work
    for m in modes:
        if ":" in m:
            print(f"[tristream] variant {m}: " + " ".join(m.split(":")[1:]))
    plan = Topology.from_config(cfg).plan
    workload = describe_workload(cfg) | {"warmup_steps": warmup, "measured_steps": steps, "repeats": repeats}
    print("workload: " + ", ".join(f"{k}={v}" for k, v in workload.items()))
    print(Topology.from_config(cfg).plan.describe())
    if cfg.train.init:
        from tristream.policies.io import load_policy
        init_state = load_policy(cfg.train.init).state_dict()
    else:
        torch.manual_seed(cfg.run.seed)
        init_state = build_policy(cfg, env_spec).state_dict()
    ceiling = env_only_ceiling(cfg, ceiling_steps) if ceiling_steps > 0 else None
    if ceiling is not None:
        print(f"env-only ceiling: {ceiling:.0f} env steps/s ({plan.env_workers} processes, zero-cost policy)")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    # Ray starts once for the whole benchmark, not once per run.
    ray_started = any(configs[m].runtime.backend == "ray" for m in modes) and _connect_ray(cfg)
    try:
        for rep in range(repeats):
            for mode in modes:
                run_cfg = configs[mode]
                if run_cfg.runtime.backend == "ray":  # where `tristream train` runs it: in the learner actor
                    from tristream.runtime.backends.ray_learner import run_in_learner_actor
                    r = run_in_learner_actor(run_cfg, measure, run_cfg, env_spec, init_state, warmup, steps)
                else:
                    r = measure(run_cfg, env_spec, init_state, warmup, steps)
                runs[mode].append(r)
                print(f"  repeat {rep + 1}/{repeats} {mode:<{max(map(len, modes))}} {r['env_steps_per_s']:7.0f} env steps/s  "
                      f"cpu {r['cpu_util']:.0%}  lag max {r['policy_lag_max']:.0f}", flush=True)
    finally:
        if ray_started:
            import ray
            ray.shutdown()
    result = {"benchmark": "throughput", "meta": run_meta(), "workload": workload, "env_only_steps_per_s": ceiling,
              "modes": {}, "ratio_vs_sync": {}}
    for mode, rs in runs.items():
        sps = [r["env_steps_per_s"] for r in rs]
        last = rs[-1]
        result["modes"][mode] = {
            "env_steps_per_s": sps, "median": statistics.median(sps), "min": min(sps), "max": max(sps),
            "cpu_util_median": statistics.median(r["cpu_util"] for r in rs),
            # training success of the measured steps: how well each mode's data train, beside how fast
            "success_median": statistics.median(r["success"] for r in rs),
            **{f"{k}_median": statistics.median(r[k] for r in rs) for k in TEXT_FIGURES if k in last},
            **{k: v for k, v in last.items() if k not in ("telemetry", "window", "env_steps_per_s")},
        }
        trace = chrome_trace(last["telemetry"], out / f"trace_{_file_label(mode)}.json", t_start=last["window"][0])
        result["modes"][mode]["trace"] = str(trace)
    base = next((result["modes"][m]["median"] for m in modes if configs[m].runtime.mode == "sync"), None)
    for mode in modes:
        result["ratio_vs_sync"][mode] = result["modes"][mode]["median"] / base if base else None
        local = result["modes"].get(mode.split("@")[0] + "@local", {}).get("median")
        if mode.endswith("@ray") and local:
            result.setdefault("ratio_ray_vs_local", {})[mode.split("@")[0]] = result["modes"][mode]["median"] / local
    png = timeline({m: (runs[m][-1]["telemetry"], runs[m][-1]["window"]) for m in modes}, out / "timeline.png")
    (out / "throughput.json").write_text(json.dumps(result, indent=2, default=float))
    print(format_result(result))
    print(f"wrote {out / 'throughput.json'}, {png}, traces "
          f"{', '.join(f'trace_{_file_label(m)}.json' for m in modes)} in {out}")
    return result


def format_result(result: dict[str, Any]) -> str:
    w = max(14, *(len(m) + 2 for m in result["modes"]))
    text = all("tokens_per_s" in r for r in result["modes"].values())
    lines = [f"{'mode':<{w}}{'median':>9}{'min':>8}{'max':>8}{'x sync':>8}{'cpu':>6}{'batch':>7}"
             f"{'lag':>5}{'success':>9}" + ("".join(f"{h:>{n}}" for h, n in TEXT_COLUMNS) if text else "")
             + "  busy fraction per role"]
    for mode, r in result["modes"].items():
        busy = " ".join(f"{k}={v:.2f}" for k, v in r["busy_fraction"].items())
        ratio = result["ratio_vs_sync"][mode]  # None without a sync mode in the run
        x_sync = f"{ratio:8.2f}" if ratio is not None else f"{'-':>8}"
        cells = ""
        if text:
            for (head, n), key in zip(TEXT_COLUMNS, TEXT_FIGURES):
                v = r.get(f"{key}_median")
                cells += f"{'-':>{n}}" if v is None else f"{v:{n}.{0 if 'tokens' in key else 3}f}"
        lines.append(f"{mode:<{w}}{r['median']:9.0f}{r['min']:8.0f}{r['max']:8.0f}{x_sync}"
                     f"{r['cpu_util_median']:6.0%}{r['inference_batch_mean']:7.1f}{r['policy_lag_max']:5.0f}"
                     f"{r['success_median']:9.2f}" + cells + f"  {busy}")
    for mode, r in result["modes"].items():
        lines.append(f"cpu cores {mode}: " + " ".join(f"{k}={v:.2f}" for k, v in r["cpu_cores"].items()))
    for mode, r in result["modes"].items():  # where each env step's CPU goes: cores / (env steps per second)
        ms = {k: 1000 * v / r["median"] for k, v in r["cpu_cores"].items() if k != "rest of machine"} \
            if r["median"] else {}
        if ms:
            lines.append(f"cpu ms per env step {mode}: " + " ".join(f"{k}={v:.2f}" for k, v in ms.items())
                         + f" total={sum(ms.values()):.2f}")
    for mode, ratio in result.get("ratio_ray_vs_local", {}).items():
        lines.append(f"{mode}: ray / local = {ratio:.2f}")
    if result["env_only_steps_per_s"] is not None:
        lines.append(f"env-only ceiling: {result['env_only_steps_per_s']:.0f} env steps/s")
    return "\n".join(lines)
