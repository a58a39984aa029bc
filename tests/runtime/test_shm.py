"""Image blocks in /dev/shm: named by run and role, taken over from a killed owner, cleaned after a dead run."""
import subprocess
import sys
from multiprocessing import shared_memory

import numpy as np
import pytest

from tristream.runtime.shm import SHM_DIR, ShmReader, ShmWriter, block_tag, remove_stale_blocks

pytestmark = pytest.mark.skipif(not SHM_DIR.is_dir(), reason="POSIX shared memory names live in /dev/shm on Linux")


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def _leave_block(name: str) -> None:
    """A block as a killed owner leaves it: created, never unlinked (and not tracked by this process)."""
    subprocess.run([sys.executable, "-c", "from multiprocessing import shared_memory, resource_tracker as rt; "
                    f"s = shared_memory.SharedMemory(name={name!r}, create=True, size=64); "
                    "rt.unregister(s._name, 'shared_memory'); s.close()"], check=True)


def test_a_writer_takes_over_the_name_a_killed_owner_left(tmp_path):
    name = block_tag(tmp_path) + "w0g0"
    _leave_block(name)
    assert (SHM_DIR / name).exists()
    writer = ShmWriter((2, 4, 4, 3), name=name)  # the replacement: same run, same worker and group
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    ref = writer.write(images)
    reader = ShmReader()
    assert ref.name == name and np.array_equal(reader.read(ref), images)
    reader.close()
    writer.close()
    assert not (SHM_DIR / name).exists()


def test_the_next_start_removes_only_blocks_of_dead_drivers_of_its_own_run(tmp_path):
    dead = block_tag(tmp_path, driver_pid=_dead_pid()) + "w1g0"
    other_run = block_tag(tmp_path / "elsewhere", driver_pid=_dead_pid()) + "w0g0"
    live = ShmWriter((1, 8), name=block_tag(tmp_path) + "w0g0")  # this process drives it: alive
    for name in (dead, other_run):
        _leave_block(name)
    try:
        assert remove_stale_blocks(tmp_path) == [dead]
        assert not (SHM_DIR / dead).exists() and (SHM_DIR / other_run).exists()
        assert (SHM_DIR / (block_tag(tmp_path) + "w0g0")).exists()
    finally:
        live.close()
        shared_memory.SharedMemory(name=other_run).unlink()
