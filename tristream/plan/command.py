"""``tristream plan measure | predict | search``: the command line of the planner (docs/planning.md)."""
from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

from tristream.plan.costs import StageCosts, check_workload, format_costs
from tristream.plan.machine import parse_machine
from tristream.plan.model import Prediction, predict


def cmd_measure(cfg, env_spec, out: str | Path) -> StageCosts:
    from tristream.plan.measure import measure_costs
    costs = measure_costs(cfg, env_spec)
    path = costs.save(out)
    print(format_costs(costs))
    print(f"wrote {path}")
    return costs


def _row(name: str, p: Prediction, measured: float | None = None) -> str:
    busy = " ".join(f"{k}={v:.2f}" for k, v in p.busy_fraction.items())
    cells = f"{name:<40}{p.env_steps_per_s:10.0f}"
    if measured:
        cells += f"{measured:10.0f}{100 * (p.env_steps_per_s / measured - 1):+8.1f}%"
    return cells + (f"{p.inference_batch_mean:7.1f}{p.inference_queue_delay_ms:9.1f}"
                    f"{p.policy_lag_mean:6.2f}/{p.policy_lag_max}  {busy}")


HEADER = f"{'batch':>7}{'wait ms':>9}{'lag':>8}  busy fraction per role"


def error_summary(predicted: dict[str, float], measured: dict[str, float]) -> dict[str, float]:
    """Median and largest |predicted / measured - 1| over the modes both hold."""
    errors = [abs(predicted[m] / measured[m] - 1) for m in predicted if measured.get(m)]
    return {"median_abs_error": statistics.median(errors), "max_abs_error": max(errors)} if errors else {}


def _benchmark(path: str, cfg) -> tuple[list[str], int, int, dict[str, float]]:
    """The modes, warm-up, measured steps and medians of a ``bench throughput`` result, which must have been
    measured on ``cfg``'s workload."""
    from tristream.provenance import read_json
    from tristream.bench.throughput import describe_workload
    result = read_json(path, "--against", "a `tristream bench throughput --out DIR` run writes DIR/throughput.json")
    try:
        workload, modes = result["workload"], result["modes"]
        warmup, steps = workload["warmup_steps"], workload["measured_steps"]
        measured = {m: float(r["median"]) for m, r in modes.items()}
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"--against {path}: not a `tristream bench throughput` result (missing {e})") from None
    if result.get("benchmark") not in (None, "throughput"):
        raise ValueError(f"--against {path}: a {result['benchmark']} result, not a `bench throughput` one")
    bad = [f"{k}={v} (the result file: {workload[k]})" for k, v in describe_workload(cfg).items()
           if k in workload and workload[k] != v]
    if bad:
        raise ValueError(f"--against {path}: the config differs from the benchmarked workload: " + ", ".join(bad)
                         + "; pass the benchmark's preset and overrides")
    return list(modes), warmup, steps, measured


def cmd_predict(cfg, costs_path: str, machine_spec: str | None, modes: list[str], *, warmup: int, steps: int,
                against: str | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """Predict each mode (``MODE[:KEY=VALUE]...`` as ``bench throughput`` takes them); with ``against``, the
    modes, warm-up and measured steps of that ``throughput.json``, and the error of each prediction."""
    from tristream.provenance import run_meta
    from tristream.bench.throughput import mode_config
    costs = StageCosts.load(costs_path)
    machine = parse_machine(machine_spec)
    measured: dict[str, float] = {}
    if against:
        modes, warmup, steps, measured = _benchmark(against, cfg)
        print(f"[plan] the modes, warm-up and measured steps of {against}")
    print(f"machine: {machine.describe()}; {warmup} warm-up + {steps} measured global steps per mode")
    print(f"{'mode':<40}{'predicted':>10}" + (f"{'measured':>10}{'error':>9}" if measured else "") + HEADER)
    rows = {}
    for mode in modes:
        mcfg = mode_config(cfg, mode)
        check_workload(costs, mcfg)
        p = predict(mcfg, costs, machine, warmup=warmup, steps=steps)
        rows[mode] = {"prediction": p.to_json(), **({"measured": measured[mode]} if mode in measured else {})}
        print(_row(mode, p, measured.get(mode)))
    summary = error_summary({m: r["prediction"]["env_steps_per_s"] for m, r in rows.items()}, measured)
    if summary:
        print(f"error |predicted / measured - 1|: median {100 * summary['median_abs_error']:.1f}%, "
              f"max {100 * summary['max_abs_error']:.1f}% over {len(rows)} configurations")
    result = {"benchmark": "plan_predict", "costs": str(costs_path), "machine": dataclasses.asdict(machine),
              "against": against, "warmup": warmup, "steps": steps, "modes": rows, **summary, "meta": run_meta()}
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        print(f"wrote {path}")
    return result


def cmd_search(cfg, costs_path: str, machine_spec: str | None, *, warmup: int, steps: int, top: int = 5,
               write_preset: str | None = None) -> dict[str, Any]:
    """Search the plan (planner.search), print the best few beside the configured plan, and optionally write
    the best as a preset: the resolved config with the plan's overrides."""
    from tristream.plan.planner import build, search
    costs = StageCosts.load(costs_path)
    check_workload(costs, cfg)
    machine = parse_machine(machine_spec)
    print(f"machine: {machine.describe()}; mode {cfg.runtime.mode}, {cfg.rollout.num_envs} envs")
    ranked = search(cfg, costs, machine, warmup=warmup, steps=steps)
    configured = next(c for c in ranked if not c.overrides)
    print(f"{'plan':<40}{'predicted':>10}" + HEADER)
    print(_row("configured", configured.prediction))
    shown: dict[str, Any] = {}
    for c in ranked:  # plans that differ only in keys left at their configured values are the same plan
        shown.setdefault(c.as_args(), c)
    for i, c in enumerate(list(shown.values())[:top]):
        print(_row(f"#{i + 1} ({c.memory_mb / 1024:.1f} GB)", c.prediction)
              + f"\n    {c.as_args() or '(as configured)'}")
    best = ranked[0]
    gain = best.prediction.env_steps_per_s / configured.prediction.env_steps_per_s
    print(f"best plan: {gain:.2f}x the configured plan's predicted env steps/s ({len(ranked)} plans simulated); "
          f"as overrides:\n  {best.as_args() or '(none: the configured plan)'}")
    if write_preset:
        import yaml
        from tristream.config.convert import to_dict
        path = Path(write_preset)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = (f"# written by `tristream plan search` for {machine.describe()}: predicted "
                f"{best.prediction.env_steps_per_s:.0f} env steps/s ({gain:.2f}x the plan it started from)\n")
        path.write_text(text + yaml.safe_dump(to_dict(build(cfg, best.overrides)), sort_keys=False))
        print(f"wrote {path} (use it with --preset {path})")
    return {"configured": configured.prediction.to_json(),
            "best": {"overrides": best.overrides, **best.prediction.to_json()}}
