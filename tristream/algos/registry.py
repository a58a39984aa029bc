"""Policy-loss registry and a uniform adapter so the learner can call any loss the same way."""
from __future__ import annotations

from typing import Any, Callable

import torch

from .fiberpo import fiberpo_domain_loss, fiberpo_loss
from .grpo import grpo_loss
from .gspo import gspo_loss
from .ppo import decoupled_ppo_loss, ppo_clip_loss, value_loss

__all__ = ["LOSSES", "get_loss", "compute_policy_loss", "value_loss"]

LossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]

LOSSES: dict[str, LossFn] = {
    "ppo": ppo_clip_loss,
    "decoupled_ppo": decoupled_ppo_loss,
    "grpo": grpo_loss,
    "gspo": gspo_loss,
    "fiberpo": fiberpo_loss,
    "fiberpo_domain": fiberpo_domain_loss,
}


def get_loss(name: str) -> LossFn:
    """The loss function registered as ``name``; ValueError listing the valid names otherwise."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown policy loss {name!r}; valid: {', '.join(sorted(LOSSES))}") from None


def compute_policy_loss(
    name: str,
    *,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    loss_reduction: str,
    behaviour_logp: torch.Tensor | None = None,
    group_ids: torch.Tensor | None = None,
    domain_ids: torch.Tensor | None = None,
    global_tokens: float | None = None,
    global_seqs: float | None = None,
    **hparams: Any,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Call policy loss ``name`` uniformly. ``old_logp`` is the proximal log-probs (policy at the start
    of this update). ``behaviour_logp`` is used by ``decoupled_ppo`` only (None = behaviour == proximal,
    i.e. plain PPO); ``group_ids``/``domain_ids`` by ``fiberpo_domain`` only (``domain_ids=None`` = one
    domain; ignored when ``precomputed=`` is passed). ``global_tokens``/``global_seqs`` are the
    micro-batching normalisers. ``hparams`` go to the loss (e.g. ``clip_eps``, ``c_pos``,
    ``precomputed``, ``norm_len``); an unknown one raises TypeError.
    """
    fn = get_loss(name)
    kwargs: dict[str, Any] = dict(loss_reduction=loss_reduction, num_global_tokens=global_tokens,
                                  num_global_seqs=global_seqs, **hparams)
    if name == "decoupled_ppo":
        beh = old_logp if behaviour_logp is None else behaviour_logp
        return fn(logp, old_logp, beh, advantages, mask, **kwargs)
    if name == "fiberpo_domain":
        return fn(logp, old_logp, advantages, mask, group_ids, domain_ids, **kwargs)
    return fn(logp, old_logp, advantages, mask, **kwargs)
