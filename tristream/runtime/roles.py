"""Builders that turn the config into role objects. Every backend builds roles through these, in
whichever process the role will live, so a role never knows where it runs."""
from __future__ import annotations

import dataclasses
from typing import Any

from tristream.runtime.shard import ShardPlan


def shard_plan(cfg) -> ShardPlan:
    return ShardPlan(cfg.rollout.num_envs, cfg.runtime.env_workers, cfg.runtime.groups_per_worker)


def env_kwargs(env_cfg) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"image_size": env_cfg.image_size, "max_episode_steps": env_cfg.max_episode_steps,
                              "reward_shaping": env_cfg.reward_shaping}
    if env_cfg.tasks:
        kwargs["tasks"] = tuple(env_cfg.tasks)
    if env_cfg.name == "gym":  # the adapter takes env.gym.*; the wrapped env's constructor takes env.kwargs
        kwargs.update(dataclasses.asdict(env_cfg.gym), env_kwargs=dict(env_cfg.kwargs))
    else:  # env-specific keywords (env.kwargs.KEY=VALUE) win over the common ones
        kwargs.update(env_cfg.kwargs)
    return kwargs


def make_env(env_cfg, latency_seed: int = 0, deferred_latency: bool = False):
    import tristream.envs  # noqa: F401  (registers the built-in envs)
    from tristream.registry import ENVS
    from tristream.envs.gym_adapter import is_gym_class
    if env_cfg.name != "gym" and ":" in env_cfg.name and is_gym_class(ENVS.resolve(env_cfg.name)):
        # env.name=pkg.mod:SomeGymEnv: a gymnasium class named directly goes through the adapter too
        env_cfg = dataclasses.replace(env_cfg, name="gym", gym=dataclasses.replace(env_cfg.gym, id=env_cfg.name))
    env = ENVS.make(env_cfg.name, **env_kwargs(env_cfg))
    if env_cfg.step_latency_ms > 0 or env_cfg.reset_latency_ms > 0:
        from tristream.envs.latency import LatencyEnv
        env = LatencyEnv(env, step_ms=env_cfg.step_latency_ms, reset_ms=env_cfg.reset_latency_ms,
                         sigma=env_cfg.latency_sigma, seed=latency_seed, deferred=deferred_latency)
    return env


def build_env_worker(cfg, worker_id: int, inbox, inference_inbox, learner_inbox, shared_memory: bool = False):
    from tristream.runtime.env_worker import EnvWorker
    seeds = iter(range(worker_id * 10_000, (worker_id + 1) * 10_000))
    return EnvWorker(worker_id, shard_plan(cfg).worker_groups(worker_id), lambda: make_env(cfg.env, next(seeds), True), inbox,
                     inference_inbox, learner_inbox, segment_len=cfg.rollout.segment_len, run_seed=cfg.run.seed,
                     group_size=cfg.rollout.group_size, shared_memory=shared_memory)


def policy_spec(policy) -> dict[str, Any]:
    """What rebuilds ``policy``'s architecture in another process: its registry name and constructor config
    (the "policy" and "config" keys of a saved policy's JSON, so read_policy_meta's result serves too)."""
    return {"policy": policy.registry_name, "config": policy.config_dict()}


def build_policy(cfg, env_spec, spec: dict[str, Any] | None = None):
    """A fresh policy of ``spec``'s architecture (policy_spec of another policy, e.g. the learner's, which
    may come from train.init) or, without one, of the config's ``policy`` section."""
    from tristream.policies import make_policy
    if spec is not None:
        return make_policy(spec["policy"], env_spec, **spec["config"])
    return make_policy(cfg.policy.name, env_spec, **cfg.policy.factory_kwargs())


def apply_rl_qat(cfg, policy) -> None:
    """``lm.qat=int8|int4`` on a language policy in RL: it computes through fake-quantized weights (fp32 master
    weights, straight-through gradients), the learner's and the inference worker's copy alike, as in SFT."""
    if cfg.lm.qat == "none":
        return
    if not hasattr(policy, "apply_qat"):
        raise ValueError(f"lm.qat={cfg.lm.qat} in RL applies to language policies (policy.name=lm); "
                         f"{type(policy).__name__} has no quantization-aware form (set lm.qat=none)")
    policy.apply_qat({"int8": 8, "int4": 4}[cfg.lm.qat], cfg.lm.qat_group_size)


def batch_max(cfg) -> int:
    """0 means lockstep (sync, or ``runtime.lockstep``); the async modes batch dynamically, by default at half
    the envs."""
    if cfg.runtime.mode == "sync" or cfg.runtime.lockstep:
        return 0
    return cfg.runtime.batch_max or max(1, cfg.rollout.num_envs // 2)


def build_inference_worker(cfg, env_spec, inbox, env_inboxes, telemetry_inbox=None, *, deterministic: bool = False,
                           policy_spec: dict[str, Any] | None = None):
    from tristream.runtime.inference import InferenceWorker
    policy = build_policy(cfg, env_spec, policy_spec)
    apply_rl_qat(cfg, policy)
    policy.configure_rollout(cfg.rollout.speculative_k, cfg.rollout.weights, cfg.lm.qat_group_size)
    return InferenceWorker(policy, inbox, env_inboxes,
                           num_groups=shard_plan(cfg).num_groups,
                           batch_max=batch_max(cfg), batch_timeout_ms=cfg.runtime.batch_timeout_ms,
                           seed=cfg.run.seed + 1, deterministic=deterministic, telemetry_inbox=telemetry_inbox)
