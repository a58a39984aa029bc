"""``tristream bench algos``: every policy loss from one SFT policy, same env-step budget, several seeds,
in the default regime and in an aggressive one (large learning rate, many epochs per batch: where trust
regions matter). Reports final success on held-out seeds, the largest mean importance ratio, the growth
of the gradient norm (largest / first), and plots the training curves."""
from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tristream.config import Config, config_from_dict, to_dict  # noqa: E402
from tristream.config.loader import apply_overrides  # noqa: E402
from tristream.metrics.tracker import read_metrics  # noqa: E402
from tristream.workflow.evaluate import evaluate  # noqa: E402
from tristream.workflow.rl import StopFlag, rl_train  # noqa: E402

LOSSES = ("ppo", "decoupled_ppo", "grpo", "gspo", "fiberpo", "fiberpo_domain")
REGIMES = {"default": [], "aggressive": ["algo.lr=1e-3", "algo.update_epochs=8"]}
RATIO_KEYS = ("gated_ratio_mean", "seq_ratio_mean", "ratio_mean")  # the loss's own ratio, first found


def _with(cfg, overrides: list[str]):
    return config_from_dict(Config, apply_overrides(Config, to_dict(cfg), overrides))


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
    ratio_key = next((k for k in RATIO_KEYS if k in rows[0]), None)
    grad = [r["grad_norm"] for r in rows]
    result = evaluate(policy, cfg, episodes=eval_episodes, label="final")
    out = {"success": result["success"], "max_mean_ratio": max(r[ratio_key] for r in rows) if ratio_key else None,
           "grad_norm_growth": max(grad) / max(grad[0], 1e-12), "curve": [r.get("success", 0.0) for r in rows]}
    done.write_text(json.dumps({"key": key, "result": out}))
    return out


def bench_algos(cfg, env_spec, out_dir: str | Path, *, losses=LOSSES, seeds=(0, 1, 2), regimes=REGIMES,
                eval_episodes: int = 100) -> dict[str, Any]:
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
    result = {"workload": {"init": cfg.train.init, "steps": cfg.train.steps, "num_envs": cfg.rollout.num_envs,
                           "advantage": cfg.algo.advantage, "seeds": list(seeds), "regimes": regimes,
                           "eval_episodes": eval_episodes}, "results": table}
    (out / "algos.json").write_text(json.dumps(result, indent=2))
    png = _plot(table, out / "algos.png")
    print(format_table(table))
    print(f"wrote {out / 'algos.json'} and {png}")
    return result


def _run_and_print(cfg, env_spec, out: Path, regime: str, overrides: list[str], loss: str, seed: int,
                   eval_episodes: int, stop: StopFlag) -> dict[str, Any] | None:
    rcfg = _with(cfg, [*overrides, f"algo.loss={loss}", f"run.seed={seed}"])
    r = run_one(rcfg, env_spec, out / regime / loss / f"seed{seed}", eval_episodes, stop)
    if r is not None:
        ratio = r["max_mean_ratio"] if r["max_mean_ratio"] is None else round(r["max_mean_ratio"], 3)
        print(f"  {regime:<10} {loss:<15} seed {seed}: success {r['success']:.2f}  max ratio {ratio}  "
              f"grad growth {r['grad_norm_growth']:.1f}", flush=True)
    return r


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"success_mean": statistics.mean(r["success"] for r in runs),
            "success": [r["success"] for r in runs],
            "max_mean_ratio": max((r["max_mean_ratio"] for r in runs if r["max_mean_ratio"] is not None),
                                  default=None),
            "grad_norm_growth_max": max(r["grad_norm_growth"] for r in runs),
            "curves": [r["curve"] for r in runs]}


def format_table(table: dict) -> str:
    lines = ["| regime | loss | final success (mean over seeds) | max mean ratio | grad-norm growth (max) |",
             "|---|---|---|---|---|"]
    for regime, by_loss in table.items():
        for loss, r in by_loss.items():
            ratio = "-" if r["max_mean_ratio"] is None else f"{r['max_mean_ratio']:.3f}"
            lines.append(f"| {regime} | {loss} | {r['success_mean']:.2f} ({', '.join(f'{s:.2f}' for s in r['success'])}) "
                         f"| {ratio} | {r['grad_norm_growth_max']:.1f} |")
    return "\n".join(lines)


def _plot(table: dict, path: Path) -> Path:
    fig, axes = plt.subplots(1, len(table), figsize=(6 * len(table), 3.6), squeeze=False)
    for ax, (regime, by_loss) in zip(axes[0], table.items()):
        for loss, r in by_loss.items():
            n = min(len(c) for c in r["curves"])
            ax.plot(range(1, n + 1), [statistics.mean(c[i] for c in r["curves"]) for i in range(n)], label=loss)
        ax.set_title(regime)
        ax.set_xlabel("global step")
        ax.set_ylabel("training success (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
