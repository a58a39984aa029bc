"""GRPO loss: the PPO clipped surrogate on token log-probs with group-normalised advantages.

Advantages come from :func:`tristream.algos.advantages.grpo_advantages` (one per rollout, broadcast
over its tokens). Shapes as in ``ppo.py``.
"""
from __future__ import annotations

import torch

from .ppo import LOG_RATIO_CLAMP, _adv, _clipped_surrogate, ratio_diagnostics
from .reductions import masked_mean, reduce_loss

__all__ = ["grpo_loss"]


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    dual_clip: float | None = None,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    loss_reduction: str = "seq-mean-token-mean",
    *,
    clip_eps_high: float | None = None,
    num_global_tokens: float | None = None,
    num_global_seqs: float | None = None,
    norm_len: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO (Shao et al. 2024) per token::

        l = max(-A r, -A clip(r, 1 - eps, 1 + eps_high)) + kl_coef * k3,    r = exp(logp - old_logp)
        k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1                  (unbiased KL(pi||ref) estimator, >= 0)

    The KL-to-reference term is off by default (``kl_coef = 0``, as DAPO / Dr. GRPO recommend); it needs
    ``ref_logp`` when on. Default reduction: seq-mean-token-mean (GRPO's 1/G sum_i 1/|o_i| sum_t).
    Diagnostics: as PPO, plus ``kl_ref`` (mean k3) when the KL term is on.
    """
    log_ratio = (logp - old_logp.detach()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = log_ratio.exp()
    adv = _adv(advantages, logp)
    hi = clip_eps if clip_eps_high is None else clip_eps_high
    loss_mat, clipped, dual = _clipped_surrogate(ratio, adv, clip_eps, hi, dual_clip)
    diag = ratio_diagnostics(log_ratio, mask)
    if kl_coef:
        if ref_logp is None:
            raise ValueError("grpo_loss: kl_coef > 0 needs ref_logp")
        d = (ref_logp.detach() - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        k3 = d.exp() - d - 1
        loss_mat = loss_mat + kl_coef * k3
        diag["kl_ref"] = masked_mean(k3.detach(), mask)
    loss = reduce_loss(loss_mat, mask, loss_reduction, num_global_tokens=num_global_tokens,
                       num_global_seqs=num_global_seqs, norm_len=norm_len)
    diag["clip_frac"] = masked_mean(clipped.to(logp.dtype), mask).detach()
    diag["dual_clip_frac"] = masked_mean(dual.to(logp.dtype), mask).detach()
    return loss, diag
