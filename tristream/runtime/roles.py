"""Role builders: the config, the topology and a role's channels -> the role object, built in whichever
process the role will live, so a role never knows where it runs. Every backend builds roles only through
:func:`build_role` and runs them with their own ``run()`` loop. Imports are lazy: an env worker's process
never loads torch or the policies."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tristream.runtime.topology import RoleId, Topology


@dataclass
class Inboxes:
    """The channels one role talks through: its own inbox and the senders' ends of the others' inboxes."""

    own: Any
    inference: Any
    env_workers: dict[int, Any]
    learner: Any


def build_role(role: RoleId, cfg, topology: Topology, inboxes: Inboxes, *, env_spec=None,
               policy_spec: dict[str, Any] | None = None, shm_tag: str | None = None, own_process: bool = False):
    """An ``EnvWorker`` or ``InferenceWorker`` for ``role``. ``policy_spec`` (policies.from_config.policy_spec of
    the learner's policy): the architecture inference builds before the first weights arrive (None: the
    config's ``policy`` section). ``shm_tag``: env workers send images through /dev/shm blocks named with it
    (runtime.shm.block_tag; None: images travel in the messages).
    ``own_process``: the role has the process to itself (inference then sets its torch threads)."""
    if role.is_env_worker:
        from tristream.envs.from_config import env_from_config
        from tristream.runtime.env_worker import EnvWorker
        seeds = iter(range(role.index * 10_000, (role.index + 1) * 10_000))
        return EnvWorker(role.index, topology.plan.worker_groups(role.index),
                         lambda: env_from_config(cfg.env, next(seeds), True), inboxes.own, inboxes.inference,
                         inboxes.learner, segment_len=cfg.rollout.segment_len, run_seed=cfg.run.seed,
                         group_size=cfg.rollout.group_size, shm_tag=shm_tag)
    import torch

    from tristream.policies.from_config import apply_rl_options, build_policy
    from tristream.runtime.inference import InferenceWorker
    if own_process:
        torch.set_num_threads(cfg.runtime.inference_threads)
    policy = build_policy(cfg, env_spec, policy_spec)
    apply_rl_options(cfg, policy)
    policy.configure_rollout(cfg.rollout.speculative_k, cfg.rollout.weights, cfg.lm.qat_group_size)
    return InferenceWorker(policy, inboxes.own, inboxes.env_workers, num_groups=topology.plan.num_groups,
                           batch_max=batch_max(cfg), batch_timeout_ms=cfg.runtime.batch_timeout_ms,
                           seed=cfg.run.seed + 1, telemetry_inbox=inboxes.learner)


def batch_max(cfg) -> int:
    """0 means lockstep (sync, or ``runtime.lockstep``); the async modes batch dynamically, by default at half
    the envs."""
    if cfg.runtime.mode == "sync" or cfg.runtime.lockstep:
        return 0
    return cfg.runtime.batch_max or max(1, cfg.rollout.num_envs // 2)
