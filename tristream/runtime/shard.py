"""The shard plan: which envs each EnvWorker holds, split into groups, each served by one InferenceWorker.

Every role derives the same plan from the config, so no role needs to ask another where an env lives.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShardPlan:
    num_envs: int
    env_workers: int
    groups_per_worker: int

    @property
    def num_groups(self) -> int:
        return self.env_workers * self.groups_per_worker

    @property
    def envs_per_group(self) -> int:
        return self.num_envs // self.num_groups

    def worker_envs(self, worker_id: int) -> list[int]:
        per_worker = self.num_envs // self.env_workers
        return list(range(worker_id * per_worker, (worker_id + 1) * per_worker))

    def worker_groups(self, worker_id: int) -> dict[int, list[int]]:
        """Global group id -> global env ids, for the groups of one worker."""
        first = worker_id * self.groups_per_worker
        return {g: list(range(g * self.envs_per_group, (g + 1) * self.envs_per_group))
                for g in range(first, first + self.groups_per_worker)}

    def describe(self) -> str:
        lines = [f"shard plan: {self.num_envs} envs = {self.env_workers} env workers x "
                 f"{self.groups_per_worker} groups x {self.envs_per_group} envs"]
        for w in range(self.env_workers):
            groups = ", ".join(f"g{g}: envs {e[0]}-{e[-1]}" for g, e in self.worker_groups(w).items())
            lines.append(f"  env worker {w}: {groups} -> inference worker 0")
        return "\n".join(lines)


def episode_seed(run_seed: int, global_step: int, env_id: int, episode: int, group_size: int = 1) -> int:
    """Training seeds: a pure function of where the episode sits, so every backend draws the same.

    Envs ``group_size`` apart share seeds (a GRPO group = same task and initial state).
    Training seeds stay below 10**7; evaluation uses held-out seeds above that.
    """
    slot = env_id // group_size
    return (run_seed * 7_919 + global_step * 104_729 + slot * 613 + episode * 31) % 9_000_000 + 1_000


def noise_key(run_seed: int, global_step: int, env_id: int, episode: int, env_step: int) -> int:
    """The key of one decision's sampling noise (``tristream.noise.RowNoise``): a pure function of where the
    decision sits (its episode, and the env steps taken in it so far), so the action sampled there does not
    depend on the backend or on which other envs share its inference batch. Unlike seeds, keys differ
    between the envs of a GRPO group."""
    key = 0
    for v in (run_seed, global_step, env_id, episode, env_step):  # FNV-style fold; RowNoise mixes it further
        key = ((key ^ v) * 0x100000001B3 + 0x9E3779B97F4A7C15) % 2**64
    return key
