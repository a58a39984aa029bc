"""Plots written into the run directory (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tristream.metrics.tracker import read_metrics  # noqa: E402


def learning_curve(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Success rate and return per global step against env steps."""
    rows = read_metrics(run_dir, "train")
    out = Path(out or Path(run_dir) / "learning_curve.png")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    x = [r.get("env_steps_total", r["step"]) for r in rows]
    for ax, key, label in [(axes[0], "success", "training success rate"), (axes[1], "return", "episode return")]:
        ax.plot(x, [r.get(key, float("nan")) for r in rows], marker=".")
        ax.set_xlabel("env steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    evals = read_metrics(run_dir, "eval")
    for r in evals:
        axes[0].axhline(r["success"], ls="--", alpha=0.5, color="C1" if r.get("label") == "rl" else "C2",
                        label=f"eval {r.get('label', '')}: {r['success']:.2f}")
    if evals:
        axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(Path(run_dir).name)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
