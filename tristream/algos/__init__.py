"""RL algorithms as pure functions of tensors: advantages, loss reductions and policy losses.

See docs/algorithms.md. Log-probs are ``[B, L]`` over the action head's tokens with a mask.
"""
from .advantages import gae, grpo_advantages
from .dpo import dpo_loss
from .fiberpo import (
    DomainPrecomputed,
    aggregate_gate,
    domain_fiberpo_quantities,
    domain_gated_ratio,
    fiberpo_domain_loss,
    fiberpo_domain_precompute,
    fiberpo_loss,
    fiberpo_quantities,
    gated_ratio,
)
from .grpo import grpo_loss
from .normalization import RunningMeanStd, destandardize, scale_rewards, standardize
from .gspo import gspo_loss
from .ppo import decoupled_ppo_loss, ppo_clip_loss, value_loss
from .reductions import REDUCTIONS, global_normalisers, reduce_loss
from .registry import LOSSES, LossSpec, compute_policy_loss, get_loss, loss_spec, register_loss

__all__ = [
    "gae", "grpo_advantages", "reduce_loss", "global_normalisers", "REDUCTIONS",
    "ppo_clip_loss", "decoupled_ppo_loss", "dpo_loss", "value_loss", "grpo_loss", "gspo_loss",
    "aggregate_gate", "gated_ratio", "fiberpo_quantities", "fiberpo_loss",
    "domain_gated_ratio", "domain_fiberpo_quantities", "fiberpo_domain_precompute", "DomainPrecomputed",
    "fiberpo_domain_loss", "RunningMeanStd", "scale_rewards", "standardize", "destandardize",
    "LOSSES", "LossSpec", "register_loss", "loss_spec", "get_loss", "compute_policy_loss",
]
