"""The config's ``policy`` section (or a saved policy's architecture) -> a policy: the one place that reads
``policy.*`` keys to build one, used by the role builders, the workflow stages and the benchmarks."""
from __future__ import annotations

from typing import Any


def policy_spec(policy) -> dict[str, Any]:
    """What rebuilds ``policy``'s architecture in another process: its registry name and constructor config
    (the "policy" and "config" keys of a saved policy's JSON, so read_policy_meta's result serves too)."""
    return {"policy": policy.registry_name, "config": policy.config_dict()}


def build_policy(cfg, env_spec, spec: dict[str, Any] | None = None):
    """A fresh policy of ``spec``'s architecture (policy_spec of another policy, e.g. the learner's, which
    may come from train.init) or, without one, of the config's ``policy`` section."""
    from tristream.policies import make_policy
    if spec is not None:
        return make_policy(spec["policy"], env_spec, **spec["config"])
    return make_policy(cfg.policy.name, env_spec, **cfg.policy.factory_kwargs())


def apply_rl_options(cfg, policy) -> None:
    """What RL adds to a policy, the learner's and the inference worker's copy alike: ``lm.qat`` and
    ``run.precision``."""
    apply_rl_qat(cfg, policy)
    policy.precision = cfg.run.precision


def apply_rl_qat(cfg, policy) -> None:
    """``lm.qat=int8|int4`` on a language policy in RL: it computes through fake-quantized weights (fp32 master
    weights, straight-through gradients), the learner's and the inference worker's copy alike, as in SFT."""
    if cfg.lm.qat == "none":
        return
    if not hasattr(policy, "apply_qat"):
        raise ValueError(f"lm.qat={cfg.lm.qat} in RL applies to language policies (policy.name=lm); "
                         f"{type(policy).__name__} has no quantization-aware form (set lm.qat=none)")
    policy.apply_qat({"int8": 8, "int4": 4}[cfg.lm.qat], cfg.lm.qat_group_size)
