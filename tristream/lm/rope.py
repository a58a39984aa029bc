"""Rotary position embedding (RoPE) for MLA's decoupled rope dimensions (rotate-half convention).

    rope(x) = x * cos + rotate_half(x) * sin,   rotate_half([x1, x2]) = [-x2, x1]
The sign of rotate_half is folded into the sin table (its first half negated), so that
rotate_half(x) * sin == roll(x, dim/2) * signed_sin: 4 ops per call instead of 6, which matters when
decoding runs ~10 RoPE calls per token.
"""
from __future__ import annotations

import torch


def rope_cos_sin(positions: torch.Tensor, dim: int, theta: float, dtype: torch.dtype):
    """cos and *signed* sin tables for integer ``positions`` [T]: each [T, dim]; cos holds the dim/2
    frequencies' cosines twice, signed_sin holds [-sin, +sin] (the input :func:`apply_rope` expects).

    Computed on the fly (a [T, dim/2] outer product) instead of a precomputed table, so 128K-context
    configs cost nothing until used.
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float64) / dim)
    freqs = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    return torch.cat([freqs, freqs], dim=-1).cos().to(dtype), torch.cat([-freqs.sin(), freqs.sin()], dim=-1).to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [..., T, dim] by the angles in cos / signed_sin [T, dim] (from :func:`rope_cos_sin`)."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin
