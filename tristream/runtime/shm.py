"""Observation images in shared memory: an env group writes its images into its own block, the request
carries only the block's name, and inference copies the rows it needs. Each group has at most one request
in flight (it waits for its actions before stepping), so a block is never overwritten while read."""
from __future__ import annotations

from dataclasses import dataclass
import sys
from multiprocessing import shared_memory

import numpy as np


@dataclass(frozen=True)
class ShmRef:
    """Where a request's images are: the first ``n`` rows of block ``name`` of ``shape`` [max_n, ...]."""

    name: str
    shape: tuple[int, ...]
    n: int


class ShmWriter:
    """Owned by an env group: a block big enough for all its envs' images."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)
        self._shm = shared_memory.SharedMemory(create=True, size=int(np.prod(self.shape)))
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
