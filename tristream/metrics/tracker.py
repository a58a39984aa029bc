"""Where metrics go: ``metrics.jsonl`` (one JSON object per step, the source of truth for plots and
tests), TensorBoard scalars, and one dense console line per step."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

# The console line shows these, in this order, when present.
CONSOLE_KEYS = [("success", "succ", ".2f"), ("return", "ret", ".2f"), ("ep_len", "len", ".0f"),
                ("env_steps_per_s", "sps", ".0f"), ("policy_loss", "pl", ".3f"), ("value_loss", "vl", ".3f"),
                ("entropy", "ent", ".2f"), ("approx_kl", "kl", ".4f"), ("clip_frac", "clip", ".2f"),
                ("grad_norm", "gn", ".2f"), ("policy_lag_max", "lag", ".0f")]


class Tracker:
    def __init__(self, run_dir: str | Path, tensorboard: bool = True, prefix: str = ""):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        self._tb = None
        if tensorboard:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(self.run_dir / "tb"))

    def log(self, step: int, metrics: dict[str, Any], phase: str = "train") -> None:
        row = {"phase": phase, "step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step",) and math.isfinite(v):
                    self._tb.add_scalar(f"{phase}/{k}", v, step)

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def drop_rows_after(run_dir: str | Path, step: int, phase: str = "train") -> int:
    """Remove ``phase`` rows past ``step`` from ``metrics.jsonl`` (a resume from an older checkpoint trains
    those steps again); returns how many went. The file is replaced atomically."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    keep = [line for line in lines if (r := json.loads(line)).get("phase") != phase or r.get("step", 0) <= step]
    if len(keep) < len(lines):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, path)
    return len(lines) - len(keep)


def console_line(step: int, total: int, metrics: dict[str, Any]) -> str:
    parts = [f"step {step}/{total}"]
    for key, short, fmt in CONSOLE_KEYS:
        if key in metrics and metrics[key] is not None:
            parts.append(f"{short} {format(metrics[key], fmt)}")
    return " | ".join(parts)


def read_metrics(run_dir: str | Path, phase: str | None = None) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if phase is None or r.get("phase") == phase]


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return v
