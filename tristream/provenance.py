"""What a result file (a benchmark's, a recipe's ``summary.json``) records besides its numbers: the command,
the commit, the machine and the versions."""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import time
from importlib import metadata
from pathlib import Path


COMMAND: list[str] | None = None  # the command line this process runs, set by the CLI (``tristream ...``)


def read_json(path: str | Path, what: str, how_made: str):
    """The JSON in ``path``; a missing or malformed file is an error naming it as ``what`` and saying
    ``how_made``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found ({how_made})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str:
    try:
        root = Path(__file__).resolve().parents[1]  # the checkout: tristream/provenance.py -> .
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_meta(packages: tuple[str, ...] = ("tristream", "torch", "gymnasium", "mujoco")) -> dict:
    versions = {}
    for p in packages:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    return {"command": shlex.join(COMMAND) if COMMAND else None, "commit": _commit(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
            "versions": versions}


def publish(result: dict, path: Path, png: Path, plot, report: str, note: str = "") -> None:
    """Write a benchmark's result file and its figure (``plot(result, png)``), then print its report and
    where both went."""
    path.write_text(json.dumps(result, indent=2))
    plot(result, png)
    print(report)
    print(f"wrote {path} and {png}{note}")
