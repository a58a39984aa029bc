"""The CPU cores this process may use, and how many env workers fill them (``runtime.env_workers=auto``)."""
from __future__ import annotations

import os

ROLES_BESIDE_ENV_WORKERS = 2  # the inference worker and the learner, a core each when there are cores to spare


def usable_cores() -> int:
    """Cores this process may run on: a container's or ``taskset``'s affinity mask, not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_env_workers(num_envs: int, groups_per_worker: int, cores: int | None = None) -> int:
    """Env workers for ``cores`` (default: :func:`usable_cores`): the cores left after the inference worker and
    the learner, at least 2 (on 2-4 cores two env workers overlap stepping with inference and training
    best), lowered to the largest count that splits ``num_envs`` into ``groups_per_worker`` equal groups per
    worker. 1 when no count does (the config's divisibility check then names the values)."""
    cores = usable_cores() if cores is None else cores
    limit = max(2, cores - ROLES_BESIDE_ENV_WORKERS)
    return next((w for w in range(min(limit, num_envs), 0, -1) if num_envs % (w * groups_per_worker) == 0), 1)
