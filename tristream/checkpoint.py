"""Checkpoints: ``<run>/checkpoints/step_<k>/`` holds the policy (safetensors + JSON) and ``trainer.pt``
(optimizer, RNG, global step, policy version, running totals). ``<run>/checkpoints/latest`` names the
newest complete one. A checkpoint is written to a temporary folder and renamed, so a crash while saving
never leaves a half-written checkpoint behind the ``latest`` pointer."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from tristream.policies.io import load_policy, save_policy


def save_checkpoint(run_dir: str | Path, step: int, policy, trainer_state: dict[str, Any], keep: int = 3) -> Path:
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".step_{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_policy(policy, tmp)
    torch.save({"step": step, **trainer_state}, tmp / "trainer.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = root / "latest.tmp"
    latest_tmp.write_text(final.name + "\n")
    os.replace(latest_tmp, root / "latest")
    for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest complete checkpoint of a run; a clear error when there is none."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.exists():
        raise FileNotFoundError(f"{pointer} not found: {run_dir} has no RL checkpoint to resume from")
    path = run_dir / "checkpoints" / pointer.read_text().strip()
    if not (path / "trainer.pt").exists():
        raise FileNotFoundError(f"checkpoint {path} is incomplete: trainer.pt is missing")
    return path


def load_checkpoint(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """(policy, trainer_state) from a checkpoint folder."""
    path = Path(path)
    policy = load_policy(path)
    try:
        state = torch.load(path / "trainer.pt", weights_only=False)
    except Exception as e:  # corrupt or truncated
        raise ValueError(f"cannot read {path / 'trainer.pt'}: {e}") from e
    return policy, state
