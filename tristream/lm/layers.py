"""The pre-norm decoder layer shared by the main stack and the MTP block."""
from __future__ import annotations

import torch
from torch import nn

from tristream.lm.cache import MLACache
from tristream.lm.config import LMConfig
from tristream.lm.mla import MLA
from tristream.lm.moe import MoE, SwiGLU


class DecoderLayer(nn.Module):
    """x + MLA(norm(x)), then + FFN(norm(x)); the FFN is MoE or a dense SwiGLU (intermediate_size)."""

    def __init__(self, cfg: LMConfig, layer_idx: int, moe: bool):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.self_attn = MLA(cfg, layer_idx)
        self.post_attention_layernorm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.mlp = MoE(cfg) if moe else SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: MLACache | None = None) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]; cos/sin [T, qk_rope_head_dim] for the T positions."""
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))
