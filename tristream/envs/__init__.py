"""Environments: the Env interface, the registry entries and ``make_env``.

Registered names: "tabletop" (the mix of all families), "tabletop/reach", "tabletop/push", "tabletop/pick",
"tabletop/place" (MuJoCo, imported lazily inside the factory, so ``import tristream.envs`` needs no OpenGL)
"toy" (pure numpy), "text" and "text/<domain>" (verifiable text problems for language policies) and "gym" (any gymnasium env through ``envs/gym_adapter.py``; ``env.gym.id`` names it).
"""
from __future__ import annotations

from typing import Any

from tristream.envs.base import Env, EnvSpec, Obs
from tristream.envs.libero import registry_entries as _libero_entries
from tristream.envs.metaworld import registry_entries as _metaworld_entries
from tristream.envs.text import registry_entries as _text_entries
from tristream.envs.toy import ToyEnv
from tristream.registry import ENVS, register_env

TABLETOP_FAMILIES: tuple[str, ...] = ("reach", "push", "pick", "place")


def _tabletop_factory(family: str | None):
    def make(**kwargs: Any) -> Env:
        from tristream.envs.tabletop.env import TabletopEnv  # lazy: imports MuJoCo / sets MUJOCO_GL

        if family is not None:
            if "task" in kwargs and kwargs["task"] != family:
                raise ValueError(f"env 'tabletop/{family}' is fixed to task {family!r}; got task={kwargs['task']!r}")
            kwargs["task"] = family
        return TabletopEnv(**kwargs)

    make.__name__ = "make_tabletop" + (f"_{family}" if family else "")
    return make


def _make_gym(**kwargs: Any) -> Env:
    from tristream.envs.gym_adapter import make_gym_env  # lazy: imports gymnasium

    return make_gym_env(**kwargs)


def _register_builtin() -> None:
    entries = {"tabletop": _tabletop_factory(None), "toy": lambda **kw: ToyEnv(**kw), "gym": _make_gym}
    for fam in TABLETOP_FAMILIES:
        entries[f"tabletop/{fam}"] = _tabletop_factory(fam)
    entries.update(_metaworld_entries())  # optional extra, imported inside the factories
    entries.update(_libero_entries())
    entries.update(_text_entries())  # verifiable text problems for language policies
    for name, factory in entries.items():
        if name not in ENVS.names():
            register_env(name, factory)


_register_builtin()


def make_env(name: str, **kwargs: Any) -> Env:
    """Build a registered env (or one named by import path ``package.module:factory``)."""
    return ENVS.make(name, **kwargs)


def env_names() -> list[str]:
    return ENVS.names()


__all__ = ["Env", "EnvSpec", "Obs", "ToyEnv", "make_env", "env_names", "TABLETOP_FAMILIES"]
