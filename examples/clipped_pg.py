"""A policy loss added from outside tristream: REINFORCE with a clipped importance weight.

    tristream train --preset tiny algo.loss=examples.clipped_pg:SPEC

``loss`` is a pure function of ``[R, T]`` rows (R segments, T = decision steps x head tokens); ``SPEC`` says
what it needs from the learner. Nothing else in tristream changes (docs/extending.md).
"""
import torch

from tristream.algos import LossSpec, reduce_loss


def clipped_pg_loss(logp, old_logp, advantages, mask, *, max_weight=2.0, loss_reduction="token-mean",
                    num_global_tokens=None, num_global_seqs=None):
    """``-min(r, max_weight).detach() * logp * A`` per token, reduced by ``loss_reduction``.

    logp, old_logp, mask: [R, T]; advantages: [R, T] (or [R]). Returns (loss, diagnostics of 0-d tensors).
    """
    adv = advantages if advantages.dim() == logp.dim() else advantages[:, None].expand_as(logp)
    weight = torch.exp(logp - old_logp).clamp(max=max_weight).detach()
    per_token = -weight * logp * adv
    loss = reduce_loss(per_token, mask, loss_reduction, num_global_tokens=num_global_tokens,
                       num_global_seqs=num_global_seqs)
    m = mask.bool()
    return loss, {"weight_mean": weight[m].mean(), "approx_kl": ((old_logp - logp).detach()[m]).mean()}


# Reads no extra inputs (no behaviour log-probs, groups or domains) and takes one hyper-parameter, fixed here.
SPEC = LossSpec(clipped_pg_loss, reduction="token-mean", hparams=lambda algo: {"max_weight": 2.0})
