"""Backends decide where roles live: ``serial`` (one process, one event loop), ``local`` (processes) or
``ray`` (Ray actors, one machine or a cluster). Each gets the same topology, built here once."""
from __future__ import annotations

from tristream.runtime.backends.base import Backend
from tristream.runtime.topology import Topology

BACKENDS = ("local", "serial", "ray")


def make_backend(cfg, env_spec, policy_spec=None) -> Backend:
    """``policy_spec`` (policies.from_config.policy_spec of the learner's policy): the architecture inference
    builds before the first weights arrive; None: the config's ``policy`` section."""
    topology = Topology.from_config(cfg)
    if cfg.runtime.backend == "serial":
        from tristream.runtime.backends.serial import SerialBackend
        return SerialBackend(cfg, topology, env_spec, policy_spec)
    if cfg.runtime.backend == "local":
        from tristream.runtime.backends.local import LocalBackend
        return LocalBackend(cfg, topology, env_spec, policy_spec)
    if cfg.runtime.backend == "ray":
        from tristream.runtime.backends.ray import RayBackend
        return RayBackend(cfg, topology, env_spec, policy_spec)
    raise ValueError(f"unknown runtime.backend {cfg.runtime.backend!r}; valid: {', '.join(BACKENDS)}")
