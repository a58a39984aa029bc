"""LIBERO as tristream envs (optional extra; install steps in docs/environments.md, "LIBERO").

Importing this package imports neither LIBERO nor robosuite nor MuJoCo; ``make_libero`` does, when an env is
built. Registered names (tristream/envs/__init__.py): "libero" (``suite=`` picks the suite, default
spatial) and "libero/spatial", "libero/object", "libero/goal", "libero/10", "libero/90".
"""
from __future__ import annotations

from typing import Any

#: tristream suite name -> LIBERO benchmark name.
SUITES: dict[str, str] = {"spatial": "libero_spatial", "object": "libero_object", "goal": "libero_goal",
                          "10": "libero_10", "90": "libero_90"}
#: Episode limits per suite as used by OpenVLA / OpenVLA-OFT / RLinf evaluations (max_steps; the 10 settle
#: steps after the initial state are not counted). See docs/environments.md.
SUITE_MAX_STEPS: dict[str, int] = {"spatial": 220, "object": 280, "goal": 300, "10": 520, "90": 400}
#: joint positions (7) + gripper finger positions (2): LIBERO datasets' obs/joint_states + obs/gripper_states,
#: which tristream's DemoDataset concatenates by default (LIBERO_STATE_KEYS).
STATE_DIM = 9
#: OSC_POSE: end-effector delta position (3), delta rotation (3), gripper (-1 open, +1 close).
ACTION_DIM = 7


def normalize_suite(name: str) -> str:
    """"spatial", "libero_spatial" -> "spatial"; unknown names raise ValueError listing the valid ones."""
    key = str(name).strip().lower()
    key = key[len("libero_"):] if key.startswith("libero_") else key
    if key not in SUITES:
        raise ValueError(f"unknown LIBERO suite {name!r}; valid suites: {', '.join(SUITES)} "
                         f"(or {', '.join(SUITES.values())})")
    return key


def libero_factory(fixed_suite: str | None):
    """The registry factory for "libero" (suite from ``suite=``) or "libero/<suite>"."""

    def make(**kwargs: Any):
        if fixed_suite is not None:
            if kwargs.get("suite") not in (None, fixed_suite):
                raise ValueError(f"env 'libero/{fixed_suite}' is fixed to suite {fixed_suite!r}; "
                                 f"got suite={kwargs['suite']!r}")
            kwargs["suite"] = fixed_suite
        kwargs["suite"] = normalize_suite(kwargs.get("suite") or "spatial")  # fails before the extra's import
        from tristream.envs.libero.env import LiberoEnv  # lazy: imports LIBERO, robosuite, MuJoCo

        return LiberoEnv(**kwargs)

    make.__name__ = "make_libero" + (f"_{fixed_suite}" if fixed_suite else "")
    return make


def registry_entries() -> dict[str, Any]:
    entries = {"libero": libero_factory(None)}
    for suite in SUITES:
        entries[f"libero/{suite}"] = libero_factory(suite)
    return entries


__all__ = ["SUITES", "SUITE_MAX_STEPS", "STATE_DIM", "ACTION_DIM", "normalize_suite", "libero_factory",
           "registry_entries"]
