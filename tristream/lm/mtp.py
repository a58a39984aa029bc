"""Dense multi-token prediction (MTP) block, DeepSeek-V3 style, as in JoyAI-LLM Flash.

At position t it combines the main model's hidden state h_t with the embedding of the next token x_{t+1}:
    u_t = eh_proj([enorm(emb(x_{t+1})); hnorm(h_t)])        # 2D -> D
    v_t = norm(decoder_block(u_t))                          # MLA attention + a DENSE SwiGLU FFN
    logits_t = lm_head(v_t)                                  # shared LM head; predicts x_{t+2}
The embedding and LM head belong to the main model (shared). For self-speculative decoding the block is
applied recursively: its own output v_t stands in for h_{t+1} at the next draft step.
"""
from __future__ import annotations

import torch
from torch import nn

from tristream.lm.cache import MLACache
from tristream.lm.config import LMConfig
from tristream.lm.layers import DecoderLayer


class MTPBlock(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        D = cfg.hidden_size
        self.enorm = nn.RMSNorm(D, eps=cfg.rms_norm_eps)
        self.hnorm = nn.RMSNorm(D, eps=cfg.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * D, D, bias=False)
        self.block = DecoderLayer(cfg, layer_idx=0, moe=False)  # layer 0 of its own cache
        self.norm = nn.RMSNorm(D, eps=cfg.rms_norm_eps)

    def forward(self, hidden: torch.Tensor, next_emb: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: MLACache | None = None) -> torch.Tensor:
        """hidden [B, T, D] (h_t), next_emb [B, T, D] (emb of x_{t+1}), cos/sin [T, R] -> v_t [B, T, D]."""
        u = self.eh_proj(torch.cat([self.enorm(next_emb), self.hnorm(hidden)], dim=-1))
        out = self.norm(self.block(u, cos, sin, cache))
        if cache is not None:
            cache.advance(hidden.shape[1])
        return out
