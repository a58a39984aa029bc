"""GSPO: group sequence policy optimisation (Zheng et al. 2025), the token-level ("GSPO-token") form.

Shapes as in ``ppo.py``.
"""
from __future__ import annotations

import torch

from .ppo import LOG_RATIO_CLAMP, _adv, ratio_diagnostics
from .reductions import masked_mean, reduce_loss

__all__ = ["gspo_loss"]


def gspo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps_low: float = 3e-4,
    clip_eps_high: float = 4e-4,
    loss_reduction: str = "seq-mean-token-mean",
    *,
    num_global_tokens: float | None = None,
    num_global_seqs: float | None = None,
    norm_len: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO with the sequence-level importance ratio::

        s_b      = exp( (1/T_b) sum_t m[b,t] (logp - old_logp)[b,t] )                 (length-normalised)
        s_{b,t}  = sg[s_b] * exp(logp[b,t] - sg[logp[b,t]])      (value s_b, gradient s_b * grad logp[b,t])
        l_{b,t}  = max(-A_{b,t} s_{b,t}, -A_{b,t} clip(s_{b,t}, 1 - eps_low, 1 + eps_high))

    The clip decision is per sequence (the value of s_{b,t} is s_b). With one advantage per sequence and
    the default ``seq-mean-token-mean`` reduction the gradient equals that of the sequence-level GSPO
    objective ``(1/|S|) sum_b min(s_b A_b, clip(s_b) A_b)``. Clip range defaults are the paper's
    (3e-4, 4e-4). Diagnostics: ratio_mean (token r), seq_ratio_mean (s_b), approx_kl, clip_frac (share
    of sequences clipped).
    """
    m = mask.bool()
    log_ratio = torch.where(m, logp - old_logp.detach(), torch.zeros_like(logp))
    n_tok = m.sum(-1).clamp(min=1).to(logp.dtype)
    seq_log_ratio = (log_ratio.sum(-1) / n_tok).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [B]
    log_s_tok = seq_log_ratio.detach().unsqueeze(-1) + logp - logp.detach()
    s_tok = log_s_tok.exp()
    adv = _adv(advantages, logp)
    loss1 = -adv * s_tok
    loss2 = -adv * s_tok.clamp(1.0 - clip_eps_low, 1.0 + clip_eps_high)
    loss_mat = torch.maximum(loss1, loss2)
    loss = reduce_loss(loss_mat, mask, loss_reduction, num_global_tokens=num_global_tokens,
                       num_global_seqs=num_global_seqs, norm_len=norm_len)
    diag = ratio_diagnostics(log_ratio, mask)
    valid_seq = m.any(-1)
    s = seq_log_ratio.detach().exp()
    seq_clipped = ((loss2 > loss1) & m).any(-1)
    diag["seq_ratio_mean"] = masked_mean(s, valid_seq)
    diag["clip_frac"] = masked_mean(seq_clipped.to(logp.dtype), valid_seq)
    return loss, diag
