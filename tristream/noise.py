"""Sampling noise drawn per batch row from the row's own key.

The inference worker batches requests as they arrive, so which rows share a forward pass depends on timing
(and on the backend). A policy that draws its sampling noise for the whole batch from one stream would
then sample different actions for the same observation in different runs. With a :class:`RowNoise` each
row's noise is a function of its key alone; the env worker keys each decision by where it sits (run seed,
global step, env, episode, decision: ``runtime.shard.noise_key``), so the serial, local and Ray backends
and every batching rule sample the same actions, as the same seeds give them the same episodes.

The numbers come from a counter-based generator (SplitMix64 of key and counter), vectorised over the
batch: a few microseconds for a batch, where one seeded ``torch.Generator`` per row costs ~20 us a row.

    >>> a, b = RowNoise([7, 8]), RowNoise([8])
    >>> a.normal(3).shape, a.uniform(2, 4).shape
    (torch.Size([2, 3]), torch.Size([2, 2, 4]))
    >>> bool((RowNoise([7, 8]).normal(3)[1] == b.normal(3)[0]).all())  # a row's noise ignores its neighbours
    True
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


class RowNoise:
    """Noise for a batch of B rows, row i from key ``keys[i]``; successive calls continue each row's stream."""

    def __init__(self, keys: Sequence[int]):
        self._keys = _mix(np.asarray([int(k) % 2**64 for k in keys], dtype=np.uint64))
        self._drawn = 0  # numbers drawn per row so far: the next call's counter offset

    def __len__(self) -> int:
        return len(self._keys)

    def _uniform53(self, n: int) -> np.ndarray:
        """[B, n] float64 uniform in [0, 1) with 53 random bits."""
        ctr = np.arange(self._drawn + 1, self._drawn + n + 1, dtype=np.uint64) * _GOLDEN
        self._drawn += n
        bits = _mix(self._keys[:, None] + ctr[None, :])
        return (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53

    def uniform(self, *shape: int) -> torch.Tensor:
        """Uniform [0, 1) noise [B, *shape] float32 (24 random bits: a float32 of 53 bits could round to 1)."""
        n = math.prod(shape)
        return torch.from_numpy((self._uniform53(n) * 2.0 ** 24).astype(np.int64).astype(np.float32)
                                * np.float32(2.0 ** -24)).view(len(self), *shape)

    def normal(self, *shape: int) -> torch.Tensor:
        """Standard normal noise [B, *shape] float32 (Box-Muller)."""
        n = math.prod(shape)
        u = self._uniform53(2 * n)
        z = np.sqrt(-2.0 * np.log1p(-u[:, :n])) * np.cos(2.0 * np.pi * u[:, n:])
        return torch.from_numpy(z.astype(np.float32)).view(len(self), *shape)


def sample_categorical(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: probs [..., V] (non-negative, need not sum to 1), u [...] uniform in [0, 1)
    -> indices [...] long, index v drawn with probability probs[..., v] / probs.sum(-1)."""
    cdf = probs.cumsum(-1)
    total = cdf[..., -1]
    if not bool((torch.isfinite(total) & (total > 0)).all()):  # as torch.multinomial: a diverged policy fails here
        raise ValueError("sample_categorical: probabilities must be finite and non-negative with a positive sum "
                         f"in every row; got row sums {total.flatten()[:8].tolist()}")
    idx = (cdf <= u.to(cdf).unsqueeze(-1) * cdf[..., -1:]).sum(-1)
    # u * total can round up to the total: fall back to the last index with probability > 0, never past it
    last = probs.shape[-1] - 1 - (probs.flip(-1) > 0).long().argmax(-1)
    return torch.minimum(idx, last)
