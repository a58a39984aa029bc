"""Task lists belong to the simulator their preset names.

The default preset picks tabletop task families (``env.tasks: [push]``, ``collect.tasks``: all four). Those
names mean nothing to Meta-World, LIBERO or a Gymnasium env, so ``tristream train env.name=metaworld/...``
with the default preset would hand ``tasks=("push",)`` to Meta-World. When the command line moves
``env.name`` to another simulator (the part before the first ``/``), the preset's task lists are dropped
(the env's own default tasks apply) unless the command line sets them too.
"""
from __future__ import annotations

from typing import Sequence

from tristream.config.loader import load_config
from tristream.config.schema import Config

# (section, field) of every list that names tasks of the preset's simulator
ENV_SCOPED_KEYS: tuple[tuple[str, str], ...] = (("env", "tasks"), ("collect", "tasks"))


def simulator(env_name: str) -> str:
    """The simulator part of an env name: ``tabletop/push`` -> ``tabletop``, ``metaworld/reach-v3`` -> ``metaworld``."""
    return env_name.split("/", 1)[0]


def load_cli_config(preset: str | None, overrides: Sequence[str]) -> tuple[Config, str | None]:
    """``load_config(Config, preset, overrides)``, minus the preset's task lists when ``env.name`` was moved
    to another simulator. Returns ``(config, note)``; ``note`` says what was dropped (None: nothing)."""
    cfg = load_config(Config, preset, overrides)
    preset_cfg = load_config(Config, preset)
    if simulator(cfg.env.name) == simulator(preset_cfg.env.name):
        return cfg, None
    given = {o.split("=", 1)[0].strip() for o in overrides}
    dropped = []
    for section, name in ENV_SCOPED_KEYS:
        key = f"{section}.{name}"
        node = getattr(cfg, section)
        if key not in given and getattr(node, name) and getattr(node, name) == getattr(getattr(preset_cfg, section), name):
            dropped.append(f"{key}={list(getattr(node, name))}")
            setattr(node, name, [])
    if not dropped:
        return cfg, None
    return cfg, (f"env.name={cfg.env.name}: the preset's {preset_cfg.env.name} task lists ({', '.join(dropped)}) "
                 f"do not apply to it and were cleared; set them on the command line to choose tasks")
