"""Checkpoints: ``<run>/checkpoints/step_<k>/`` holds the policy (safetensors + JSON), ``trainer.pt``
(optimizer, RNG, global step, policy version, running totals) and ``manifest.json`` (size and SHA-256 of
every file). ``<run>/checkpoints/latest`` names the newest one.

A checkpoint cannot be half-written: its files go into a temporary folder, are fsynced, and the folder is
renamed into place before ``latest`` moves; a failed save (a full disk) removes its temporary folder and
leaves the previous checkpoint and pointer as they were. Reading goes the other way: :func:`latest_checkpoint`
checks the manifest of the newest checkpoint and, when it is unreadable (truncated, corrupted, half-copied),
warns naming it and falls back to the newest one that checks out.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from tristream.policies.io import load_policy, save_policy

MANIFEST = "manifest.json"


class CheckpointError(OSError):
    """A checkpoint that cannot be written or read, with the path and the reason."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's entry to disk (a folder's fsync makes a rename durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def save_checkpoint(run_dir: str | Path, step: int, policy, trainer_state: dict[str, Any], keep: int = 3) -> Path:
    """Write checkpoint ``step`` and point ``latest`` at it; keep the newest ``keep``. A failed write raises
    :class:`CheckpointError` naming the previous checkpoint, which stays intact."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".step_{step:06d}.tmp"
    latest_tmp = root / "latest.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        save_policy(policy, tmp)
        torch.save({"step": step, **trainer_state}, tmp / "trainer.pt")
        files = {str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in _files(tmp)}
        (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": files}, indent=1))
        for p in [*_files(tmp), tmp / MANIFEST, tmp]:
            _fsync(p)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        with open(latest_tmp, "w") as f:
            f.write(final.name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(latest_tmp, root / "latest")
        _fsync(root)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        latest_tmp.unlink(missing_ok=True)
        pointer = root / "latest"
        previous = pointer.read_text().strip() if pointer.exists() else None
        kept = f"the previous checkpoint {root / previous} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointError(f"saving checkpoint {final} failed ({e.strerror or e}); {kept}") from e
    for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def verify_checkpoint(path: str | Path) -> None:
    """Raise :class:`CheckpointError` naming what is wrong unless every file of ``path`` matches its manifest
    (a checkpoint written before manifests existed only needs its ``trainer.pt``)."""
    path = Path(path)
    if not (path / "trainer.pt").exists():
        raise CheckpointError(f"checkpoint {path} is incomplete: trainer.pt is missing")
    manifest = path / MANIFEST
    if not manifest.exists():
        return
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path}: unreadable {MANIFEST} ({e})") from None
    for name, want in files.items():
        f = path / name
        if not f.exists():
            raise CheckpointError(f"checkpoint {path}: {name} is missing")
        if f.stat().st_size != want["bytes"]:
            raise CheckpointError(f"checkpoint {path}: {name} has {f.stat().st_size} bytes, the manifest says "
                                  f"{want['bytes']} (truncated?)")
        if _sha256(f) != want["sha256"]:
            raise CheckpointError(f"checkpoint {path}: {name} does not match its SHA-256 in {MANIFEST} (corrupted)")


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest readable checkpoint of a run: the one ``latest`` names, else (with a warning naming what
    was skipped and why) the newest older one whose files match their manifest; a clear error when none."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    root = run_dir / "checkpoints"
    pointer = root / "latest"
    named = [root / pointer.read_text().strip()] if pointer.exists() else []
    candidates = list(dict.fromkeys(named + sorted((p for p in root.glob("step_*") if p.is_dir()), reverse=True)))
    if not candidates:
        raise FileNotFoundError(f"{pointer} not found: {run_dir} has no RL checkpoint to resume from")
    skipped = []
    for path in candidates:
        try:
            verify_checkpoint(path)
        except CheckpointError as e:
            skipped.append(str(e))
            print(f"[tristream] warning: skipping {e}", flush=True)
            continue
        if skipped:
            print(f"[tristream] warning: using the newest readable checkpoint, {path}", flush=True)
        return path
    raise CheckpointError(f"{run_dir} has no readable checkpoint: " + "; ".join(skipped))


def load_checkpoint(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """(policy, trainer_state) from a checkpoint folder."""
    path = Path(path)
    policy = load_policy(path)
    try:
        state = torch.load(path / "trainer.pt", weights_only=False)
    except Exception as e:  # corrupt or truncated
        raise ValueError(f"cannot read {path / 'trainer.pt'}: {e}") from e
    return policy, state
