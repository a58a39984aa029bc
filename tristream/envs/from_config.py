"""The config's ``env`` section -> an env: the one place that reads ``env.*`` keys to build one, used by every
role builder, the workflow stages and the benchmarks."""
from __future__ import annotations

import dataclasses
from typing import Any


def env_kwargs(env_cfg) -> dict[str, Any]:
    """Constructor keywords for ``env_cfg.name``'s factory: the common keys, then ``env.kwargs`` (which win)."""
    kwargs: dict[str, Any] = {"image_size": env_cfg.image_size, "max_episode_steps": env_cfg.max_episode_steps,
                              "reward_shaping": env_cfg.reward_shaping}
    if env_cfg.tasks:
        kwargs["tasks"] = tuple(env_cfg.tasks)
    if env_cfg.name == "gym":  # the adapter takes env.gym.*; the wrapped env's constructor takes env.kwargs
        kwargs.update(dataclasses.asdict(env_cfg.gym), env_kwargs=dict(env_cfg.kwargs))
    else:  # env-specific keywords (env.kwargs.KEY=VALUE) win over the common ones
        kwargs.update(env_cfg.kwargs)
    return kwargs


def env_from_config(env_cfg, latency_seed: int = 0, deferred_latency: bool = False):
    """An env as ``env_cfg`` describes it, wrapped in the latency model when ``env.step_latency_ms`` or
    ``env.reset_latency_ms`` is set (``deferred_latency``: the env worker waits, not the env)."""
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
