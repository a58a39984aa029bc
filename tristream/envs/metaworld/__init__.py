"""Meta-World v3 as tristream envs (optional extra: ``pip install 'tristream[metaworld]'``).

Importing this package does not import Meta-World or MuJoCo; ``make_metaworld`` does, when an env is built.
Registered names (tristream/envs/__init__.py): "metaworld" (tasks from ``tasks=``; default MT50),
"metaworld/mt10", "metaworld/mt50" and "metaworld/<task>" for each of the 50 v3 tasks ("metaworld/reach-v3").
"""
from __future__ import annotations

from typing import Any

from tristream.envs.metaworld.tasks import INSTRUCTIONS, MT10, MT50, TASK_SETS, normalize_task, resolve_tasks


def metaworld_factory(fixed: str | None):
    """The registry factory for "metaworld" (``fixed=None``) or "metaworld/<task or set>"."""

    def make(**kwargs: Any):
        if fixed is not None:
            if kwargs.get("tasks"):
                raise ValueError(f"env 'metaworld/{fixed}' is fixed to {fixed!r}; use env 'metaworld' with "
                                 f"tasks={list(kwargs['tasks'])!r} instead")
            if kwargs.get("task") not in (None, fixed):
                raise ValueError(f"env 'metaworld/{fixed}' is fixed to {fixed!r}; got task={kwargs['task']!r}")
            kwargs["task"] = fixed
        resolve_tasks(kwargs.get("task"), kwargs.get("tasks"))  # bad ids fail here, before the extra is imported
        from tristream.envs.metaworld.env import MetaWorldEnv  # lazy: imports metaworld and MuJoCo

        return MetaWorldEnv(**kwargs)

    make.__name__ = "make_metaworld" + (f"_{fixed}" if fixed else "")
    return make


def registry_entries() -> dict[str, Any]:
    entries = {"metaworld": metaworld_factory(None)}
    for name in (*TASK_SETS, *MT50):
        entries[f"metaworld/{name}"] = metaworld_factory(name)
    return entries


__all__ = ["INSTRUCTIONS", "MT10", "MT50", "TASK_SETS", "normalize_task", "resolve_tasks", "metaworld_factory",
           "registry_entries"]
