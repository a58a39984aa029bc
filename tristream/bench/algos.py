"""``tristream bench algos``: every policy loss from one SFT policy, same env-step budget, several seeds,
in a default regime and an aggressive one (where trust regions matter). Reports final success on held-out
seeds, the raw importance ratio current / behaviour (its largest step mean and its largest token: the same
quantity for every loss, whatever the loss clips or gates), the growth of the gradient norm (largest /
first), and plots the per-update diagnostics of every loss side by side.

Aggressive regimes: for robot policies a large learning rate and many epochs per batch; for language
policies (``policy.name=lm``) off-policy pressure at the configured learning rate: many epochs over each
batch in small mini-batches, in async with a lag bound of 2 (``LANGUAGE_REGIMES``)."""
from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tristream.provenance import run_meta  # noqa: E402
from tristream.bench.variants import parse_named_overrides, with_overrides  # noqa: E402
from tristream.config import to_dict  # noqa: E402
from tristream.metrics.tracker import read_metrics  # noqa: E402
from tristream.workflow.evaluate import evaluate  # noqa: E402
from tristream.workflow.rl import StopFlag, rl_train  # noqa: E402

LOSSES = ("ppo", "decoupled_ppo", "grpo", "gspo", "fiberpo", "fiberpo_domain")
LANGUAGE_LOSSES = ("grpo", "gspo", "fiberpo", "fiberpo_domain")
REGIMES = {"default": [], "aggressive": ["algo.lr=1e-3", "algo.update_epochs=8"]}
LANGUAGE_REGIMES = {"default": [], "aggressive": ["algo.update_epochs=8", "algo.global_batch=32",
                                                  "runtime.mode=async", "runtime.max_policy_lag=2"]}
# Logged per update and plotted side by side (absent keys, e.g. a loss without trajectory zones, are skipped).
CURVES = ("success", "raw_ratio_mean", "raw_ratio_max", "approx_kl", "clip_frac", "token_clip_frac",
          "traj_pass_frac", "traj_rollback_frac", "traj_zeroed_frac", "grad_norm", "entropy", "tokens_per_sample",
          "rollout_logp_diff_mean", "rollout_kl")


def parse_regimes(text: str) -> dict[str, list[str]]:
    """``"NAME[:KEY=VALUE]...,..."`` -> {name: overrides}, e.g. ``fp32,int4:rollout.weights=int4``."""
    return parse_named_overrides(text, "bench algos --regimes")


def defaults_for(cfg) -> tuple[tuple[str, ...], dict[str, list[str]]]:
    """(losses, regimes) of the bench for this config: the language ones for a language policy."""
    return (LANGUAGE_LOSSES, LANGUAGE_REGIMES) if cfg.policy.name == "lm" else (LOSSES, REGIMES)


def run_one(cfg, env_spec, run_dir: Path, eval_episodes: int, stop: StopFlag | None = None) -> dict[str, Any] | None:
    """Train and evaluate one (regime, loss, seed); the result is kept in ``run_dir/result.json`` and reused
    when the bench is run again with the same config, so an interrupted bench continues where it stopped.
    An unfinished run is redone from scratch; returns None when ``stop`` ended the training early."""
    run_dir = Path(run_dir)
    done = run_dir / "result.json"
    key = {"config": to_dict(cfg), "eval_episodes": eval_episodes}
    if done.is_file():
        saved = json.loads(done.read_text())
        if saved.get("key") == key:
            return saved["result"]
    if run_dir.exists():  # an interrupted or differently configured run: its metrics would mix in
        shutil.rmtree(run_dir)
    policy = rl_train(cfg, run_dir, env_spec, init=cfg.train.init, progress=False, stop=stop)
    if stop is not None and stop():
        return None
    rows = read_metrics(run_dir, "train")
    grad = [r["grad_norm"] for r in rows]
    result = evaluate(policy, cfg, episodes=eval_episodes, label="final")
    out = {"success": result["success"], "tasks": {t: v["success"] for t, v in result["tasks"].items()},
           "max_mean_ratio": max(r["raw_ratio_mean"] for r in rows),
           "max_token_ratio": max(r["raw_ratio_max"] for r in rows),
           "grad_norm_growth": max(grad) / max(grad[0], 1e-12),
           "curves": {k: [r.get(k, float("nan")) for r in rows] for k in CURVES if k in rows[0]}}
    done.write_text(json.dumps({"key": key, "result": out}))
    return out


def bench_algos(cfg, env_spec, out_dir: str | Path, *, losses=None, seeds=(0, 1, 2), regimes=None,
                eval_episodes: int = 100) -> dict[str, Any]:
    """``losses`` / ``regimes``: None for :func:`defaults_for` the config."""
    default_losses, default_regimes = defaults_for(cfg)
    losses, regimes = losses or default_losses, regimes or default_regimes
    if not cfg.train.init:
        raise ValueError("bench algos starts every loss from one SFT policy: pass train.init=<policy folder>")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"workload: init {cfg.train.init}, {cfg.train.steps} global steps x {cfg.rollout.num_envs} envs, "
          f"advantage {cfg.algo.advantage}, losses {', '.join(losses)}, seeds {list(seeds)}, regimes "
          + "; ".join(f"{k}: {' '.join(v) or 'config as given'}" for k, v in regimes.items())
          + f", eval {eval_episodes} held-out episodes")
    table: dict[str, dict[str, dict]] = {}
    with StopFlag() as stop:
        for regime, overrides in regimes.items():
            for loss in losses:
                runs = [_run_and_print(cfg, env_spec, out, regime, overrides, loss, seed, eval_episodes, stop)
                        for seed in seeds if not stop()]
                if stop():
                    print(f"[tristream] bench stopped; finished runs are kept in {out}: run the same command again "
                          "to continue")
                    return {}
                table.setdefault(regime, {})[loss] = _summary(runs)
    workload = {"init": cfg.train.init, "steps": cfg.train.steps, "num_envs": cfg.rollout.num_envs,
                "advantage": cfg.algo.advantage, "seeds": list(seeds), "regimes": regimes,
                "eval_episodes": eval_episodes}
    result = {"benchmark": "algos", "meta": run_meta(), "workload": workload, "results": table}
    (out / "algos.json").write_text(json.dumps(result, indent=2))
    png = _plot(table, out / "algos.png")
    print(format_table(table))
    print(f"wrote {out / 'algos.json'} and {png}")
    return result


def _run_and_print(cfg, env_spec, out: Path, regime: str, overrides: list[str], loss: str, seed: int,
                   eval_episodes: int, stop: StopFlag) -> dict[str, Any] | None:
    rcfg = with_overrides(cfg, [*overrides, f"algo.loss={loss}", f"run.seed={seed}"])
    r = run_one(rcfg, env_spec, out / regime / loss / f"seed{seed}", eval_episodes, stop)
    if r is not None:
        print(f"  {regime:<10} {loss:<15} seed {seed}: success {r['success']:.2f}  raw ratio: max step mean "
              f"{r['max_mean_ratio']:.3g}, max token {r['max_token_ratio']:.3g}  grad growth "
              f"{r['grad_norm_growth']:.1f}", flush=True)
    return r


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    tasks = sorted({t for r in runs for t in r["tasks"]})
    return {"success_mean": statistics.mean(r["success"] for r in runs),
            "success": [r["success"] for r in runs],
            "tasks_mean": {t: statistics.mean(r["tasks"].get(t, 0.0) for r in runs) for t in tasks},
            "max_mean_ratio": max(r["max_mean_ratio"] for r in runs),
            "max_token_ratio": max(r["max_token_ratio"] for r in runs),
            "grad_norm_growth_max": max(r["grad_norm_growth"] for r in runs),
            "curves": [r["curves"] for r in runs]}


def format_table(table: dict) -> str:
    lines = ["| regime | loss | held-out success (mean over seeds) | raw ratio: max step mean | raw ratio: max token "
             "| grad-norm growth (max) |", "|---|---|---|---|---|---|"]
    for regime, by_loss in table.items():
        for loss, r in by_loss.items():
            lines.append(f"| {regime} | {loss} | {r['success_mean']:.2f} ({', '.join(f'{s:.2f}' for s in r['success'])}) "
                         f"| {r['max_mean_ratio']:.3g} | {r['max_token_ratio']:.3g} | {r['grad_norm_growth_max']:.1f} |")
    return "\n".join(lines)


def _plot(table: dict, path: Path) -> Path:
    """One row per logged diagnostic, one column per regime, one line per loss (mean over seeds)."""
    keys = [k for k in CURVES if any(k in c for by_loss in table.values() for r in by_loss.values() for c in r["curves"])]
    fig, axes = plt.subplots(len(keys), len(table), figsize=(5.5 * len(table), 2.2 * len(keys)), squeeze=False,
                             sharex="col")
    for col, (regime, by_loss) in enumerate(table.items()):
        for row, key in enumerate(keys):
            ax = axes[row][col]
            for j, (loss, r) in enumerate(by_loss.items()):  # one colour per loss in every panel
                curves = [c[key] for c in r["curves"] if key in c]
                if curves:
                    n = min(len(c) for c in curves)
                    ax.plot(range(1, n + 1), [statistics.mean(c[i] for c in curves) for i in range(n)], label=loss,
                            color=f"C{j}")
            if key in ("raw_ratio_max", "grad_norm"):
                ax.set_yscale("log")
            ax.set_ylabel(key, fontsize=7)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(regime)
                ax.legend(fontsize=6)
        axes[-1][col].set_xlabel("global step")
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path
