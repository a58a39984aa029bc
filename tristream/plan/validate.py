"""``tristream plan validate``: predicted against measured throughput, side by side on this machine.

A machine whose speed drifts (this one's drifts by tens of percent within minutes) would turn a cost file
measured once into an error that is the drift's, not the model's. So each repeat measures the stage costs
(``plan measure``) and right after runs every mode once as ``tristream bench throughput`` does (the same
function, interleaved), and each repeat's runs are predicted from that repeat's costs. Reported per mode:
the median measured and the median predicted env steps/s over repeats, the error of the medians, and the
range of the per-repeat errors.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

from tristream.provenance import run_meta
from tristream.bench.plan_tables import format_prediction
from tristream.bench.throughput import bench_throughput, mode_config
from tristream.plan.command import error_summary
from tristream.plan.machine import Machine
from tristream.plan.measure import measure_costs
from tristream.plan.model import predict


def validate(cfg, env_spec, out_dir: str | Path, *, modes: tuple[str, ...], repeats: int = 3, warmup: int = 1,
             steps: int = 3) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.algo.critic_warmup:  # as bench throughput measures it: every step trains the policy
        cfg = dataclasses.replace(cfg, algo=dataclasses.replace(cfg.algo, critic_warmup=0))
    configs = {m: mode_config(cfg, m) for m in modes}  # bad modes fail before any work
    machine = Machine()
    rows: dict[str, dict[str, list]] = {m: {"predicted": [], "measured": [], "predictions": []} for m in modes}
    for rep in range(repeats):
        print(f"[plan] repeat {rep + 1}/{repeats}: stage costs, then every mode once", flush=True)
        costs = measure_costs(cfg, env_spec)
        costs.save(out / f"costs_{rep + 1}.json")
        result = bench_throughput(cfg, env_spec, out / f"repeat_{rep + 1}", modes=modes, repeats=1, warmup=warmup,
                                  steps=steps, ceiling_steps=0)
        for m in modes:
            p = predict(configs[m], costs, machine, warmup=warmup, steps=steps)
            rows[m]["predicted"].append(p.env_steps_per_s)
            rows[m]["measured"].append(result["modes"][m]["median"])
            rows[m]["predictions"].append(p.to_json())
    modes_out = {}
    for m, r in rows.items():
        order = sorted(range(repeats), key=lambda i: r["predicted"][i])
        errors = [p / q - 1 for p, q in zip(r["predicted"], r["measured"])]  # bench medians are never 0
        modes_out[m] = {"prediction": r["predictions"][order[len(order) // 2]] | {
                            "env_steps_per_s": statistics.median(r["predicted"])},
                        "measured": statistics.median(r["measured"]), "predicted_runs": r["predicted"],
                        "measured_runs": r["measured"], "run_errors": errors}
    summary = error_summary({m: v["prediction"]["env_steps_per_s"] for m, v in modes_out.items()},
                            {m: v["measured"] for m, v in modes_out.items()})
    result = {"benchmark": "plan_predict", "meta": run_meta(), "machine": dataclasses.asdict(machine),
              "repeats": repeats, "warmup": warmup, "steps": steps, "modes": modes_out, **summary}
    path = out / "validation.json"
    path.write_text(json.dumps(result, indent=2))
    print(format_prediction(result))
    print(f"wrote {path} (per repeat: costs_N.json and repeat_N/throughput.json)")
    return result
