"""Observation images in shared memory: an env group writes its images into its own block, the request
carries only the block's name, and inference copies the rows it needs. Each group has at most one request
in flight (it waits for its actions before stepping), so a block is never overwritten while read.

Blocks are named by run and role, ``ts_<run hash>_<driver pid>_w<worker>g<group>`` (:func:`block_tag`), so
whoever replaces a killed env worker creates the same names and unlinks the dead one's blocks first, and
the next start of a run whose driver died (``kill -9``) unlinks the blocks it left (:func:`remove_stale_blocks`).
"""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

SHM_DIR = Path("/dev/shm")  # where POSIX shared memory names live on Linux


def _run_hash(run_dir: str | os.PathLike) -> str:
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]


def block_tag(run_dir: str | os.PathLike, driver_pid: int | None = None) -> str:
    """The name prefix of a run's blocks: its directory (hashed) and the pid of the process that drives it."""
    return f"ts_{_run_hash(run_dir)}_{os.getpid() if driver_pid is None else driver_pid}_"


def run_blocks(run_dir: str | os.PathLike) -> list[Path]:
    """The /dev/shm blocks of every driver of the run in ``run_dir`` (none where there is no /dev/shm)."""
    return sorted(SHM_DIR.glob(f"ts_{_run_hash(run_dir)}_*")) if SHM_DIR.is_dir() else []


def remove_stale_blocks(run_dir: str | os.PathLike) -> list[str]:
    """Unlink the blocks of earlier runs in ``run_dir`` whose driver process is gone (a run killed with
    ``kill -9`` unlinks nothing); returns their names. Blocks of a live driver are left alone."""
    prefix = f"ts_{_run_hash(run_dir)}_"
    removed = []
    for path in run_blocks(run_dir):
        pid = path.name[len(prefix):].split("_", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@dataclass(frozen=True)
class ShmRef:
    """Where a request's images are: the first ``n`` rows of block ``name`` of ``shape`` [max_n, ...]."""

    name: str
    shape: tuple[int, ...]
    n: int


class ShmWriter:
    """Owned by an env group: a block big enough for all its envs' images. ``name``: the block's name (None:
    a random one); a block of that name left by a killed owner is unlinked and created afresh."""

    def __init__(self, shape: tuple[int, ...], name: str | None = None):
        self.shape = tuple(shape)
        size = int(np.prod(self.shape))
        try:
            self._shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        except FileExistsError:  # the previous owner of this name was killed before it could unlink
            _attach(name).unlink()
            self._shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        self._array = np.ndarray(self.shape, dtype=np.uint8, buffer=self._shm.buf)

    def write(self, images: np.ndarray) -> ShmRef:
        self._array[: len(images)] = images
        return ShmRef(self._shm.name, self.shape, len(images))

    def unlink(self) -> None:
        """Remove the block's name (the mapping stays usable until ``close``)."""
        try:
            self._shm.unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        del self._array
        self._shm.close()
        self.unlink()


class ShmReader:
    """Held by inference: attaches to each block once and copies rows out."""

    def __init__(self):
        self._blocks: dict[str, tuple[shared_memory.SharedMemory, np.ndarray]] = {}

    def read(self, ref: ShmRef) -> np.ndarray:
        if ref.name not in self._blocks:
            shm = _attach(ref.name)
            self._blocks[ref.name] = (shm, np.ndarray(ref.shape, dtype=np.uint8, buffer=shm.buf))
        return self._blocks[ref.name][1][: ref.n].copy()

    def unlink_all(self) -> None:
        """Remove the names of every block attached so far, whoever owns them: Ray actors do not share a
        resource tracker, so a killed owner's blocks would otherwise stay in /dev/shm."""
        for shm, _ in list(self._blocks.values()):
            try:
                shm.unlink()
            except FileNotFoundError:  # the owner was first
                pass

    def close(self) -> None:
        for shm, _ in self._blocks.values():
            shm.close()
        self._blocks.clear()


def _attach(name: str) -> shared_memory.SharedMemory:
    """Attach to the owner's block. Roles start with ``spawn`` and share the main process's resource
    tracker, which the owner's ``unlink`` keeps in order; Python >= 3.13 can skip tracking altogether."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, create=False, track=False)
    return shared_memory.SharedMemory(name=name, create=False)
