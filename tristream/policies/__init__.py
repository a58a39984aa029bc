"""Policies: the Policy interface (base.py), the built-in small VLA (vla/), the language model (lm.py, for
text envs), plain actor-critic MLP and CNN policies (actor_critic.py), save/load (io.py).

Add a policy by registering a factory ``factory(env_spec, **kwargs) -> Policy``:
    from tristream.registry import register_policy
    register_policy("my_policy", make_my_policy)
or name it by import path (``"my_pkg.module:make_my_policy"``) wherever a policy name is expected.
"""
from __future__ import annotations

from typing import Any

from ..registry import POLICIES, register_policy
from .base import ActOutput, EvalOutput, Policy
from .vla import VLAConfig, VLAPolicy, make_vla_policy

register_policy("vla", make_vla_policy, overwrite=True)  # overwrite: harmless on module reload


def _make_lm_policy(env_spec, **kwargs: Any) -> Policy:
    from .lm import make_lm_policy  # lazy: the language model's modules load only when asked for
    return make_lm_policy(env_spec, **kwargs)


register_policy("lm", _make_lm_policy, overwrite=True)


def _make_mlp_policy(env_spec, **kwargs: Any) -> Policy:
    from .actor_critic import make_mlp_policy
    return make_mlp_policy(env_spec, **kwargs)


def _make_cnn_policy(env_spec, **kwargs: Any) -> Policy:
    from .actor_critic import make_cnn_policy
    return make_cnn_policy(env_spec, **kwargs)


# plain actor-critic networks of a peer library's size (actor_critic.py)
register_policy("mlp", _make_mlp_policy, overwrite=True)
register_policy("cnn", _make_cnn_policy, overwrite=True)


def make_policy(name: str, env_spec, **kwargs: Any) -> Policy:
    """Build a registered policy (or one named by import path) for ``env_spec``."""
    policy = POLICIES.resolve(name)(env_spec, **kwargs)
    if getattr(policy, "registry_name", None) != name:
        try:  # remember the name it was built under, so save_policy can record it
            policy.registry_name = name
        except AttributeError:
            pass
    return policy


__all__ = [
    "ActOutput", "EvalOutput", "Policy", "VLAConfig", "VLAPolicy", "make_policy", "register_policy",
    "save_policy", "load_policy", "read_policy_meta",
]


from .io import load_policy, read_policy_meta, save_policy  # noqa: E402  (io uses make_policy)
