"""Name -> factory registries for envs and policies.

Factories may be registered in code (``register_env``) or named in a config by import path
(``package.module:factory``), so a user's package can add components without editing tristream.
"""
from __future__ import annotations

import difflib
import importlib
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

    def resolve(self, name: str) -> Callable[..., Any]:
        if name in self._factories:
            return self._factories[name]
        if ":" in name:  # an import path, package.module:attr
            module_name, _, attr = name.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as e:
                raise ValueError(f"cannot import {self.kind} module {module_name!r} from {name!r}: {e}") from e
            if not hasattr(module, attr):
                raise ValueError(f"module {module_name!r} has no attribute {attr!r} (from {self.kind} {name!r})")
            return getattr(module, attr)
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown {self.kind} {name!r}.{hint} Valid {self.kind}s: {', '.join(self.names())}"
            f" (or an import path 'package.module:factory')"
        )

    def make(self, name: str, **kwargs: Any) -> Any:
        return self.resolve(name)(**kwargs)


ENVS = Registry("env")
POLICIES = Registry("policy")


def register_env(name: str, factory: Callable[..., Any], *, overwrite: bool = False) -> None:
    """Register an env factory: ``factory(**kwargs) -> tristream.envs.base.Env``."""
    ENVS.register(name, factory, overwrite=overwrite)


def register_policy(name: str, factory: Callable[..., Any], *, overwrite: bool = False) -> None:
    """Register a policy factory: ``factory(env_spec, **kwargs) -> tristream.policies.base.Policy``."""
    POLICIES.register(name, factory, overwrite=overwrite)
