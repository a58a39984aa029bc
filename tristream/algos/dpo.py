"""DPO: direct preference optimisation (Rafailov et al. 2023), the sigmoid loss, with label smoothing
(conservative DPO, Mitchell 2023).

Inputs are sequence log-probs [B]: the sum over a response's tokens (and its EOS) of log pi(token | prefix),
for the chosen and the rejected response of each pair, under the policy being trained and under the frozen
reference (the SFT model, computed once).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["dpo_loss"]


def dpo_loss(chosen_logp: torch.Tensor, rejected_logp: torch.Tensor, ref_chosen_logp: torch.Tensor,
             ref_rejected_logp: torch.Tensor, *, beta: float = 0.1, label_smoothing: float = 0.0
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sigmoid DPO over B pairs; every input [B]::

        r_c = beta (chosen_logp - ref_chosen_logp)         implicit reward of the chosen response
        r_r = beta (rejected_logp - ref_rejected_logp)     ... of the rejected one
        h   = r_c - r_r
        loss = mean_b[ -(1 - ls) log sigmoid(h) - ls log sigmoid(-h) ]

    ``label_smoothing`` ls in [0, 0.5): the probability that a pair's preference label is flipped.
    Diagnostics (detached): reward_chosen / reward_rejected (means of r_c, r_r), reward_margin (mean h),
    reward_accuracy (share of pairs with h > 0), chosen_logp / rejected_logp (means of the policy's).
    """
    if beta <= 0:
        raise ValueError(f"dpo_loss: beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo_loss: label_smoothing must be in [0, 0.5), got {label_smoothing}")
    r_c = beta * (chosen_logp - ref_chosen_logp.detach())
    r_r = beta * (rejected_logp - ref_rejected_logp.detach())
    h = r_c - r_r
    loss = (-(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)).mean()
    diag = {"reward_chosen": r_c.mean(), "reward_rejected": r_r.mean(), "reward_margin": h.mean(),
            "reward_accuracy": (h > 0).float().mean(), "chosen_logp": chosen_logp.mean(),
            "rejected_logp": rejected_logp.mean()}
    return loss, {k: v.detach() for k, v in diag.items()}
