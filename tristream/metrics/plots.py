"""Plots written into the run directory (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from tristream.metrics.tracker import read_metrics  # noqa: E402


def short_count(x: float, _pos=None) -> str:
    """An axis label for a count: 950, 12k, 1.5M (matplotlib's plain labels run into each other)."""
    for scale, unit in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.0f}"


def count_axis(axis) -> None:
    """Few, short tick labels on ``axis`` (e.g. ``ax.xaxis``) of env steps or samples."""
    axis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    axis.set_major_formatter(FuncFormatter(short_count))


def learning_curve(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Success rate and return per global step against env steps."""
    rows = read_metrics(run_dir, "train")
    out = Path(out or Path(run_dir) / "learning_curve.png")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    x = [r.get("env_steps_total", r["step"]) for r in rows]
    for ax, key, label in [(axes[0], "success", "training success rate"), (axes[1], "return", "episode return")]:
        y = [r.get(key, float("nan")) for r in rows]
        ax.plot(x, y, marker=".", alpha=0.35, label="per global step")
        k = min(8, len(y))  # a trailing mean: per-step values of a few dozen episodes are noisy
        if k > 1:
            ax.plot(x[k - 1:], [sum(y[i - k + 1:i + 1]) / k for i in range(k - 1, len(y))], color="C0",
                    label=f"mean of {k}")
        ax.set_xlabel("env steps")
        count_axis(ax.xaxis)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    evals = [r for r in read_metrics(run_dir, "eval") if "success" in r]  # (a language SFT logs exact_match)
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


COLOURS = {"step": "#4c72b0", "reset": "#8172b2", "forward": "#dd8452", "train": "#55a868",
           "prepare": "#c44e52"}  # prepare: the learner computing advantages of arriving segments


def timeline(runs: dict, out: str | Path, max_seconds: float = 8.0) -> Path:
    """One panel per mode, one row per role, busy spans coloured by activity; white is idle.

    ``runs``: mode -> (telemetry list, (t0, t1) measured window). Shows the first ``max_seconds``.
    """
    out = Path(out)
    fig, axes = plt.subplots(len(runs), 1, figsize=(12, 1.2 + 0.45 * 4 * len(runs)), squeeze=False)
    for ax, (mode, (telemetry, (t0, t1))) in zip(axes[:, 0], runs.items()):
        roles = sorted({t.role for t in telemetry}, key=lambda r: (r != "learner", r != "inference", r))
        for row, role in enumerate(roles):
            for t in telemetry:
                if t.role != role:
                    continue
                for name, a, b in t.spans:
                    if b < t0 or a > t0 + max_seconds:
                        continue
                    ax.broken_barh([(a - t0, b - a)], (row - 0.4, 0.8), color=COLOURS.get(name, "grey"))
        ax.set_yticks(range(len(roles)), roles)
        ax.set_xlim(0, min(max_seconds, t1 - t0))
        ax.set_title(mode, loc="left", fontsize=10)
        ax.set_xlabel("seconds into the measured window")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    fig.legend(handles, list(COLOURS), loc="upper right", ncol=len(COLOURS), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
