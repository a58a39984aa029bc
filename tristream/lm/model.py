"""LM: a DeepSeek-V3 / JoyAI-LLM-Flash-style decoder (MLA + MoE + dense MTP), nanoGPT-style.

    tokens [B, T] -> embed -> num_hidden_layers x DecoderLayer -> norm -> hidden [B, T, D] -> lm_head
The first ``first_k_dense_replace`` layers have a dense SwiGLU FFN, the rest MoE (moe.py). The optional
MTP block (mtp.py) predicts token t+2 from ``hidden`` and is trained with a weighted auxiliary loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from tristream.lm.cache import MLACache
from tristream.lm.config import LMConfig
from tristream.lm.layers import DecoderLayer
from tristream.lm.mla import RopeTable
from tristream.lm.moe import MoE
from tristream.lm.mtp import MTPBlock


@dataclass
class LMOutput:
    logits: torch.Tensor  # [B, T, V] ([B, 1, V] for last_only forwards)
    hidden: torch.Tensor  # [B, T, D] final-normed hidden states (the LM head's input, and the MTP's h_t)


class LM(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i, moe=cfg.is_moe_layer(i))
                                    for i in range(cfg.num_hidden_layers))
        self.norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.mtp = MTPBlock(cfg) if cfg.num_nextn_predict_layers > 0 else None
        self.rope = RopeTable(cfg)
        if self.embed_tokens.weight.device.type != "meta":  # meta builds (parameter counts) skip init
            self.apply(self._init_weights)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def _init_weights(self, m: nn.Module) -> None:
        std = self.cfg.initializer_range
        if isinstance(m, (nn.Linear, nn.Embedding)) or hasattr(m, "e_score_correction_bias"):  # (Router)
            nn.init.normal_(m.weight, std=std)

    # --- forward passes -------------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, cache: MLACache | None = None, last_only: bool = False) -> LMOutput:
        """tokens [B, T] long. With ``cache``, they sit at positions [cache.length, cache.length + T) and
        the cache is extended by T. ``last_only``: logits of the last position only ([B, 1, V]; decoding
        needs no more, and lm_head is the largest matmul at vocab 129k); hidden is always [B, T, D]."""
        T = tokens.shape[1]
        x = self.embed_tokens(tokens)
        cos, sin = self._rope(cache, T, x)
        for layer in self.layers:
            x = layer(x, cos, sin, cache)
        if cache is not None:
            cache.advance(T)
        hidden = self.norm(x)
        return LMOutput(logits=self.lm_head(hidden[:, -1:] if last_only else hidden), hidden=hidden)

    def mtp_forward(self, hidden: torch.Tensor, next_tokens: torch.Tensor,
                    cache: MLACache | None = None, last_only: bool = False,
                    select: torch.Tensor | None = None) -> LMOutput:
        """MTP block: hidden [B, T, D] (h_t), next_tokens [B, T] (x_{t+1}) -> logits for x_{t+2} [B, T, V]
        (or [B, 1, V] with ``last_only``, or at position ``select[b]`` of each row with ``select`` [B]) and
        the block's normed output [B, T, D]. With ``cache`` (from :meth:`new_cache` with mtp=True),
        positions start at cache.length."""
        if self.mtp is None:
            raise ValueError("this LMConfig has num_nextn_predict_layers=0: no MTP block")
        emb = self.embed_tokens(next_tokens)
        cos, sin = self._rope(cache, next_tokens.shape[1], emb)
        v = self.mtp(hidden, emb, cos, sin, cache)
        if select is not None:  # per-row position: [B] -> logits [B, 1, V]
            return LMOutput(logits=self.lm_head(v[torch.arange(v.shape[0], device=v.device), select][:, None]),
                            hidden=v)
        return LMOutput(logits=self.lm_head(v[:, -1:] if last_only else v), hidden=v)

    def _rope(self, cache: MLACache | None, T: int, x: torch.Tensor):
        """cos, sin for the T new tokens: [T, R] at positions cache.length.., or [B, T, R] per row when the
        cache is ragged."""
        positions = cache.begin(T) if cache is not None else None
        if positions is not None:  # ragged: rows hold fewer tokens than slots, so positions stay in range
            return self.rope.at(positions, x.dtype)
        start = cache.length if cache is not None else 0
        self._check_positions(start, T)
        return self.rope(start, T, x.device, x.dtype)

    def _check_positions(self, start: int, T: int) -> None:
        if start + T > self.cfg.max_position_embeddings:
            raise ValueError(f"LM: positions [{start}, {start + T}) exceed LMConfig.max_position_embeddings="
                             f"{self.cfg.max_position_embeddings} (the longest sequence this config is for)")

    def new_cache(self, batch_size: int, capacity: int = 256, mtp: bool = False) -> MLACache:
        """An empty compressed KV cache for the main stack (or, with mtp=True, for the MTP block)."""
        p = self.embed_tokens.weight  # (lm_head may be swapped for a quantized module)
        return MLACache(1 if mtp else self.cfg.num_hidden_layers, batch_size, self.cfg.kv_lora_rank,
                        self.cfg.qk_rope_head_dim, capacity, device=p.device, dtype=p.dtype)

    # --- training -------------------------------------------------------------------------------------
    def loss(self, tokens: torch.Tensor, loss_mask: torch.Tensor, mtp_weight: float = 0.1):
        """Next-token CE plus ``mtp_weight`` x the MTP block's CE on token t+2.

        tokens [B, T] long; loss_mask [B, T] (bool or float) marks the *target* tokens that count: the
        main loss predicts tokens[:, t+1] from position t, weighted by loss_mask[:, t+1]; the MTP loss
        predicts tokens[:, t+2] from position t, weighted by loss_mask[:, t+2].
        Returns (scalar loss, stats dict of floats).
        """
        mask = loss_mask.to(torch.float32)
        out = self(tokens)
        ce, acc = _masked_ce(out.logits[:, :-1], tokens[:, 1:], mask[:, 1:])
        total, stats = ce, {"ce": ce.item(), "acc": acc}
        if self.mtp is not None and mtp_weight > 0 and tokens.shape[1] > 2:
            mtp_logits = self.mtp_forward(out.hidden[:, :-2], tokens[:, 1:-1]).logits
            mtp_ce, mtp_acc = _masked_ce(mtp_logits, tokens[:, 2:], mask[:, 2:])
            total = total + mtp_weight * mtp_ce
            stats.update(mtp_ce=mtp_ce.item(), mtp_acc=mtp_acc)
        stats.update(self.load_stats())
        stats["loss"] = total.item()
        return total, stats

    def moe_layers(self) -> list[MoE]:
        return [layer.mlp for layer in self.layers if isinstance(layer.mlp, MoE)]

    def layer_loads(self) -> list[float]:
        """Expert load of the last forward, max/mean of the tokens per expert, for each MoE layer that routed."""
        return [(m.last_load.max() / m.last_load.float().mean()).item()
                for m in self.moe_layers() if m.last_load is not None and m.last_load.sum() > 0]

    def load_stats(self) -> dict[str, float]:
        """Expert load of the last forward: max/mean per MoE layer, averaged and worst over layers."""
        ratios = self.layer_loads()
        if not ratios:
            return {}
        return {"load_max_mean": sum(ratios) / len(ratios), "load_max_mean_worst": max(ratios)}

    @torch.no_grad()
    def update_router_bias(self, rate: float | None = None) -> dict[str, float]:
        """Aux-loss-free balancing step for every MoE layer (call after each optimizer step).

        Uses the loads counted in training-mode forwards since the last call; ``rate`` defaults to
        cfg.router_bias_update_rate (0 only resets the counts), the rule is cfg.router_bias_update
        (sign or proportional). Returns the counted load's max/mean,
        averaged and worst over layers ({} for a dense model or when nothing was counted).
        """
        rate = self.cfg.router_bias_update_rate if rate is None else rate
        rule = self.cfg.router_bias_update
        ratios = [r for r in (m.router.update_bias(rate, rule) for m in self.moe_layers()) if r > 0]
        if not ratios:
            return {}
        return {"load_max_mean": sum(ratios) / len(ratios), "load_max_mean_worst": max(ratios)}


def _masked_ce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor):
    """Mean CE over masked positions (logits [B, T, V], targets/mask [B, T]) and the masked accuracy."""
    dtype = torch.promote_types(logits.dtype, torch.float32)  # CE in fp32 (or wider) even for bf16 logits
    ce = F.cross_entropy(logits.to(dtype).flatten(0, 1), targets.flatten(), reduction="none")
    m = mask.flatten().to(dtype)
    denom = m.sum().clamp(min=1.0)
    acc = ((logits.argmax(-1).flatten() == targets.flatten()).float() * m).sum() / denom
    return (ce * m).sum() / denom, acc.item()


class _SkipInit(TorchFunctionMode):
    """Turns nn.init's fills into no-ops: initialising ~30k meta-device Linears costs seconds for nothing.

    A TorchFunctionMode is thread-local, so (unlike patching ``torch.nn.init``) modules that another
    thread builds meanwhile are initialised normally.
    """

    _SKIPPED = frozenset({nn.init.kaiming_uniform_, nn.init.uniform_, nn.init.normal_})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._SKIPPED:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def count_parameters(cfg_or_model: LMConfig | LM) -> dict[str, int]:
    """Parameter counts; a config is built on the meta device (no memory). Counted:

    total            every parameter, MTP block included (embedding and lm_head counted separately
                     when untied, once when tied)
    total_main       total without the MTP block (the model a plain forward uses)
    mtp              the MTP block alone (its embedding and head are shared with the main model)
    embedding        input embedding + lm_head (each vocab_size x hidden_size)
    active           per token in the main model without embedding and lm_head: attention, norms, dense
                     FFNs, routers, shared experts and num_experts_per_tok routed experts per MoE layer
    active_with_embeddings   active + embedding
    """
    if isinstance(cfg_or_model, LM):
        model = cfg_or_model
    else:
        with torch.device("meta"), _SkipInit():
            model = LM(cfg_or_model)
    cfg = model.cfg

    def n(mod: nn.Module) -> int:
        return sum(p.numel() for p in mod.parameters())

    total = n(model)
    mtp = n(model.mtp) if model.mtp is not None else 0
    embedding = n(model.embed_tokens) + (0 if cfg.tie_word_embeddings else n(model.lm_head))
    inactive = 0
    for moe in model.moe_layers():
        per_expert = n(moe.experts[0])
        inactive += per_expert * (len(moe.experts) - cfg.num_experts_per_tok)
    active = total - mtp - embedding - inactive
    return {"total": total, "total_main": total - mtp, "mtp": mtp, "embedding": embedding,
            "active": active, "active_with_embeddings": active + embedding}
