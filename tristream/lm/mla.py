"""Multi-head Latent Attention (MLA, DeepSeek-V2/V3).

Queries go through a low-rank bottleneck (``q_lora_rank``; 0/None = one plain projection). Keys and values
are reconstructed from one shared latent c_kv of width ``kv_lora_rank`` per token, and a separate
``qk_rope_head_dim``-wide key carries the position (RoPE), shared by all heads ("decoupled RoPE"). Only
c_kv (after its RMSNorm) and the rotated rope key are cached (see cache.py); K/V are re-expanded from the
cache with ``kv_b_proj`` at every forward. Absorbing ``kv_b_proj`` into the query/output projections would
save that expansion, but reads weights directly and would bypass QAT's fake-quantized Linear modules, so
this module always calls its projections as modules.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tristream.lm.cache import MLACache
from tristream.lm.config import LMConfig
from tristream.lm.rope import apply_rope, rope_cos_sin


#: queries up to this many tokens per row (decoding, a speculative verify, short prompts) attend with
#: explicit matmul / softmax / matmul; longer ones with scaled_dot_product_attention (fused kernels)
SMALL_QUERY = 16


class MLA(nn.Module):
    def __init__(self, cfg: LMConfig, layer_idx: int):
        super().__init__()
        self.cfg, self.layer_idx = cfg, layer_idx
        H, D = cfg.num_attention_heads, cfg.hidden_size
        self.n_heads = H
        if cfg.q_lora_rank:
            self.q_a_proj = nn.Linear(D, cfg.q_lora_rank, bias=False)
            self.q_a_layernorm = nn.RMSNorm(cfg.q_lora_rank, eps=cfg.rms_norm_eps)
            self.q_b_proj = nn.Linear(cfg.q_lora_rank, H * cfg.qk_head_dim, bias=False)
        else:
            self.q_proj = nn.Linear(D, H * cfg.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(D, cfg.kv_lora_rank + cfg.qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = nn.RMSNorm(cfg.kv_lora_rank, eps=cfg.rms_norm_eps)
        self.kv_b_proj = nn.Linear(cfg.kv_lora_rank, H * (cfg.qk_nope_head_dim + cfg.v_head_dim), bias=False)
        self.o_proj = nn.Linear(H * cfg.v_head_dim, D, bias=False)
        self.scale = cfg.qk_head_dim ** -0.5

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: MLACache | None = None) -> torch.Tensor:
        """x [B, T, D] at positions [start, start + T) (start = cache.length, else 0); cos/sin [T, R], or
        [B, T, R] for a ragged cache (per-row positions).

        With a cache, writes this layer's latent and rope key for the T positions and attends to all
        cached positions (a ragged cache: to the row's valid slots, ``cache.mask``). Returns [B, T, D].
        """
        cfg, H = self.cfg, self.n_heads
        B, T, _ = x.shape
        nope, R, V = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        if cfg.q_lora_rank:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        else:
            q = self.q_proj(x)
        q = q.view(B, T, H, nope + R).transpose(1, 2)  # [B, H, T, nope + R]
        q_nope, q_rope = q.split([nope, R], dim=-1)
        q_cos, q_sin = (cos, sin) if cos.dim() == 2 else (cos[:, None], sin[:, None])  # [B, 1, T, R]: per head
        q = torch.cat([q_nope, apply_rope(q_rope, q_cos, q_sin)], dim=-1)

        latent, k_rope = self.kv_a_proj_with_mqa(x).split([cfg.kv_lora_rank, R], dim=-1)
        latent = self.kv_a_layernorm(latent)  # [B, T, C]
        k_rope = apply_rope(k_rope, cos, sin)  # [B, T, R]
        start = 0
        if cache is not None:
            start = cache.length
            latent, k_rope = cache.update(self.layer_idx, latent, k_rope)  # [B, S, C], [B, S, R]
        S = latent.shape[1]

        kv = self.kv_b_proj(latent).view(B, S, H, nope + V).transpose(1, 2)  # [B, H, S, nope + V]
        k_nope, v = kv.split([nope, V], dim=-1)
        k = torch.cat([k_nope, k_rope[:, None].expand(B, H, S, R)], dim=-1)  # [B, H, S, nope + R]

        ragged = cache is not None and cache.mask is not None
        if T <= SMALL_QUERY:  # decode and verify steps: three plain ops beat SDPA's general path on a CPU
            scores = torch.matmul(q, k.transpose(-1, -2)).mul_(self.scale)  # [B, H, T, S]
            if ragged or T > 1:
                scores = torch.where(_mask(T, S, start, cache, x.device), scores, float("-inf"))
            out = torch.matmul(scores.softmax(-1), v)
        elif ragged or start > 0:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=_mask(T, S, start, cache, x.device),
                                                 scale=self.scale)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, H * V))


def _mask(T: int, S: int, start: int, cache: MLACache | None, device) -> torch.Tensor:
    """Which keys each query sees: a ragged cache's per-row mask [B, 1, T, S] (the row's valid slots), else
    [T, S] causal after a prefix of ``start`` positions (query i, at position start + i, sees keys
    0..start + i)."""
    if cache is not None and cache.mask is not None:
        return cache.mask
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=start)


class RopeTable:
    """cos/sin for positions [0, n), grown by doubling and sliced per forward (decoding asks for one
    position at a time; recomputing the table each step would cost a dozen small ops per forward)."""

    def __init__(self, cfg: LMConfig):
        self.dim, self.theta = cfg.qk_rope_head_dim, cfg.rope_theta
        self.cos = self.sin = None

    def __call__(self, start: int, T: int, device, dtype):
        """cos, signed sin (rope.py) for positions [start, start + T): each [T, qk_rope_head_dim]."""
        end = start + T
        if self.cos is None or self.cos.shape[0] < end or self.cos.dtype != dtype or self.cos.device != device:
            n = max(end, 2 * self.cos.shape[0] if self.cos is not None else 256)
            with torch.inference_mode(False):  # a normal tensor, usable by later training forwards
                self.cos, self.sin = rope_cos_sin(torch.arange(n, device=device), self.dim, self.theta, dtype)
        return self.cos[start:end], self.sin[start:end]

    def at(self, positions: torch.Tensor, dtype):
        """cos, sin at integer ``positions`` [B, T] (per-row positions of a ragged cache): each [B, T, R]."""
        self(0, int(positions.max()) + 1, positions.device, dtype)  # grows the table when needed
        return self.cos[positions], self.sin[positions]
