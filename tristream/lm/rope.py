"""Rotary position embedding (RoPE) for MLA's decoupled rope dimensions (rotate-half convention)."""
from __future__ import annotations

import torch


def rope_cos_sin(positions: torch.Tensor, dim: int, theta: float, dtype: torch.dtype):
    """cos, sin tables for integer ``positions`` [T]: each [T, dim] (the dim/2 frequencies repeated twice).

    Computed on the fly (a [T, dim/2] outer product) instead of a precomputed table, so 128K-context
    configs cost nothing until used.
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float64) / dim)
    freqs = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [..., T, dim] by the angles in cos/sin [T, dim]."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin
