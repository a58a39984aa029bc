"""Name -> factory registries for envs and policies.

Factories may be registered in code (``register_env``) or named in a config by import path
(``package.module:factory``), so a user's package can add components without editing tristream.
"""
from __future__ import annotations

import difflib
import importlib
import os
import sys
from typing import Any, Callable


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, factory: Callable[..., Any], *, overwrite: bool = False) -> None:
        if name in self._factories and not overwrite:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def summary(self, max_per_family: int = 5) -> str:
        """Names for help texts: families with many members (``metaworld/...``) collapse to a count."""
        families: dict[str, list[str]] = {}
        for n in self.names():
            families.setdefault(n.split("/")[0], []).append(n)
        parts = []
        for fam, names in families.items():
            members = [n for n in names if n != fam]
            if len(members) > max_per_family:
                parts.append(f"{fam}/<{len(members)} names>" if fam not in names else f"{fam}[/<{len(members)} names>]")
            else:
                parts.extend(names)
        return ", ".join(parts)

    def resolve(self, name: str) -> Callable[..., Any]:
        if name in self._factories:
            return self._factories[name]
        if ":" in name:  # an import path, package.module:attr
            module_name, _, attr = name.partition(":")
            try:
                module = _import_module(module_name)
            except ImportError as e:
                raise ValueError(f"cannot import {self.kind} module {module_name!r} from {name!r}: {e}") from e
            if not hasattr(module, attr):
                raise ValueError(f"module {module_name!r} has no attribute {attr!r} (from {self.kind} {name!r})")
            return getattr(module, attr)
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listing = f" (all: tristream {self.kind} list)" if self.kind == "env" else ""
        raise ValueError(f"unknown {self.kind} {name!r}.{hint} Valid {self.kind}s{listing}: {self.summary()}, or an "
                         f"import path 'package.module:factory'")

    def make(self, name: str, **kwargs: Any) -> Any:
        return self.resolve(name)(**kwargs)


def _import_module(module_name: str):
    """Import a module of an import path; like uvicorn, fall back to the current directory, so
    ``examples.pixel_reach:PixelReachEnv`` works from a checkout without setting PYTHONPATH (spawned
    roles inherit sys.path)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        if cwd in sys.path or not module_name.startswith(e.name or "\0"):
            raise
        sys.path.append(cwd)  # last: never shadows an installed package
        return importlib.import_module(module_name)


ENVS = Registry("env")
POLICIES = Registry("policy")


def register_env(name: str, factory: Callable[..., Any], *, overwrite: bool = False) -> None:
    """Register an env factory: ``factory(**kwargs) -> tristream.envs.base.Env``."""
    ENVS.register(name, factory, overwrite=overwrite)


def register_policy(name: str, factory: Callable[..., Any], *, overwrite: bool = False) -> None:
    """Register a policy factory: ``factory(env_spec, **kwargs) -> tristream.policies.base.Policy``."""
    POLICIES.register(name, factory, overwrite=overwrite)
