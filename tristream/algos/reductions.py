"""Loss reductions: how a per-token loss matrix ``[B, L]`` becomes a scalar.

The modes follow verl's ``agg_loss``. With ``m`` the mask, ``T_b = sum_t m[b, t]`` (valid tokens of
row b), ``S`` = the rows with at least one valid token and ``L`` = ``norm_len`` (default: the padded
length ``loss_mat.shape[-1]``)::

    token-mean                : sum_{b,t} m l / sum_{b,t} m                    (every token weighs the same)
    seq-mean-token-mean       : (1/|S|) sum_b (1/T_b) sum_t m l                (every sequence weighs the same)
    seq-mean-token-sum        : (1/|S|) sum_b sum_t m l                        (longer sequences weigh more)
    seq-mean-token-sum-norm   : (1/|S|) sum_b (1/L) sum_t m l                  (Dr. GRPO: a constant length)

Micro-batching: pass the *global* counts of the whole mini-batch (``num_global_tokens`` = sum of the
mask, ``num_global_seqs`` = |S|; see :func:`global_normalisers`) and each micro-batch divides its sums by
them, so summing the micro-batch losses (and their gradients) equals the full-batch loss exactly. For
``seq-mean-token-sum-norm`` also fix ``norm_len`` (micro-batches may be padded to different widths).
Unlike verl, ``seq-mean-token-sum-norm`` also divides by the number of sequences (Dr. GRPO's form),
so the loss scale does not depend on the batch size.
"""
from __future__ import annotations

import torch

__all__ = ["REDUCTIONS", "reduce_loss", "global_normalisers", "masked_mean"]

REDUCTIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def global_normalisers(mask: torch.Tensor) -> tuple[float, float]:
    """``(num_tokens, num_seqs)`` of a full mini-batch ``mask [B, L]``, counted as ``reduce_loss`` does
    (a sequence counts when it has at least one valid token). Sum them across data-parallel ranks
    before passing them to the micro-batched losses."""
    m = mask.bool()
    return float(m.sum().item()), float(m.any(dim=-1).sum().item())


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the valid entries of ``mask`` (0 when there are none)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1)


def reduce_loss(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    *,
    num_global_tokens: float | None = None,
    num_global_seqs: float | None = None,
    norm_len: float | None = None,
) -> torch.Tensor:
    """Reduce ``loss_mat [B, L]`` over the valid entries of ``mask [B, L]`` with ``mode`` (see module doc).

    Masked entries of ``loss_mat`` may hold anything finite (they are zeroed with ``torch.where``, so even
    inf/NaN there does not leak into the value; their gradient is zero).
    ``num_global_tokens`` replaces ``sum(mask)`` (token-mean); ``num_global_seqs`` replaces ``|S|``
    (seq-* modes). Returns a scalar.
    """
    if mode not in REDUCTIONS:
        raise ValueError(f"unknown loss reduction {mode!r}; valid: {', '.join(REDUCTIONS)}")
    if loss_mat.dim() != 2 or loss_mat.shape != mask.shape:
        raise ValueError(f"loss_mat and mask must both be [B, L]; got {tuple(loss_mat.shape)} and {tuple(mask.shape)}")
    m = mask.bool()
    masked = torch.where(m, loss_mat, torch.zeros_like(loss_mat))
    if mode == "token-mean":
        denom = num_global_tokens if num_global_tokens is not None else m.sum().clamp(min=1)
        return masked.sum() / denom
    n_seq = num_global_seqs if num_global_seqs is not None else m.any(dim=-1).sum().clamp(min=1)
    seq_sum = masked.sum(dim=-1)
    if mode == "seq-mean-token-mean":
        seq_loss = seq_sum / m.sum(dim=-1).clamp(min=1).to(loss_mat.dtype)
    elif mode == "seq-mean-token-sum":
        seq_loss = seq_sum
    else:  # seq-mean-token-sum-norm
        seq_loss = seq_sum / (norm_len if norm_len is not None else loss_mat.shape[-1])
    return seq_loss.sum() / n_seq
