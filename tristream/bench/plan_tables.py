"""The table of a planner validation (``tristream plan validate``'s validation.json, or the prediction.json of
``tristream plan predict --against throughput.json``): each mode's predicted env steps/s beside the
benchmark's measured median, and the error. Plain JSON in, Markdown out, for ``tristream report``."""
from __future__ import annotations


def format_prediction(result: dict) -> str:
    """Markdown: one row per mode (with ``plan validate``'s repeats: medians, and the per-repeat errors'
    range), then the median and largest error over the modes."""
    runs = any("run_errors" in row for row in result["modes"].values())
    lines = ["| mode | predicted env steps/s | measured | error |" + (" error per repeat |" if runs else "")
             + " predicted batch | predicted busy: env workers / inference / learner |",
             "|---|---|---|---|" + ("---|" if runs else "") + "---|---|"]
    for mode, row in result["modes"].items():
        p, measured = row["prediction"], row.get("measured")
        busy = p["busy_fraction"]
        envs = ", ".join(f"{v:.2f}" for k, v in busy.items() if k.startswith("env_worker"))
        cells = [mode, f"{p['env_steps_per_s']:.0f}", f"{measured:.0f}" if measured else "-",
                 f"{100 * (p['env_steps_per_s'] / measured - 1):+.1f}%" if measured else "-"]
        if runs:
            e = row.get("run_errors") or [0.0]
            cells.append(f"{100 * min(e):+.0f}% to {100 * max(e):+.0f}%")
        cells += [f"{p['inference_batch_mean']:.1f}",
                  f"{envs} / {busy.get('inference', 0):.2f} / {busy.get('learner', 0):.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if "median_abs_error" in result:
        what = f"medians over {result['repeats']} repeats" if runs else "one cost file"
        lines.append(f"\nError (predicted / measured - 1, absolute) over {len(result['modes'])} configurations, "
                     f"{what}: median {100 * result['median_abs_error']:.1f}%, largest "
                     f"{100 * result['max_abs_error']:.1f}%.")
    return "\n".join(lines)
