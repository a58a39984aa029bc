"""Backends decide where roles live: ``serial`` (one process, one event loop), ``local`` (processes) or
``ray`` (Ray actors, one machine or a cluster)."""
from __future__ import annotations


def make_backend(cfg, env_spec, policy_spec=None):
    """``policy_spec`` (roles.policy_spec of the learner's policy): the architecture inference builds
    before the first weights arrive; None: the config's ``policy`` section."""
    if cfg.runtime.backend == "serial":
        from tristream.runtime.backends.serial import SerialBackend
        return SerialBackend(cfg, env_spec, policy_spec)
    if cfg.runtime.backend == "local":
        from tristream.runtime.backends.local import LocalBackend
        return LocalBackend(cfg, env_spec, policy_spec)
    if cfg.runtime.backend == "ray":
        from tristream.runtime.backends.ray import RayBackend
        return RayBackend(cfg, env_spec, policy_spec)
    raise ValueError(f"unknown runtime.backend {cfg.runtime.backend!r}; valid: local, serial, ray")
