"""Mixture-of-Experts FFN: sigmoid router with auxiliary-loss-free balancing, routed + shared SwiGLU experts.

Routing (DeepSeek-V3 ``noaux_tc``), for each token x:
    s = sigmoid(W_r x)                          # [E] affinities, computed in fp32 (or wider)
    top-k experts chosen on s + b               # b: per-expert bias, used for the choice only
    g_i = s_i / sum_{j in top-k} s_j            # if norm_topk_prob, from the *unbiased* scores
    y = shared(x) + routed_scaling_factor * sum_{i in top-k} g_i * expert_i(x)
Balancing: during training forwards every layer counts how many tokens each expert received; after each
optimizer step ``update_bias`` moves b_e by ``rate * sign(mean_load - load_e)`` (under-loaded experts
become more likely to be picked) and resets the counts. There is no auxiliary loss term; the bias only
changes which experts a token reaches (and hence which experts receive its gradient).

Two ways to run the routed experts, same function: training and large batches group the tokens per expert
and call each chosen expert once (compute ~ k/E of all experts). Small inference batches (decoding, a
speculative verify of k+1 tokens) run every expert on every token as two wide matmuls over fused weights
(every expert's gate and up rows stacked into one [E*2F, D] matrix, every down projection side by side in
one [D, E*F] matrix) with the unchosen experts' hidden units zeroed by their gate: E/k times the FLOPs,
but a fixed ~8 ops instead of ~8 per chosen expert, and at a few tokens the op count is what costs time on
a CPU. Exported low-bit experts (quant.QuantizedLinear) are fused the same way, codes and scales laid side
by side, so they run one integer kernel per projection too.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tristream.lm.config import LMConfig

#: the all-experts path is used under no-grad when tokens x experts x 3 x D x F (its FLOPs) stays below
#: this: a few tokens of a tiny model, never the released 256-expert configuration
DENSE_EXPERT_FLOPS = 3e7


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)): [..., D] -> [..., D]. Dense FFN, one expert, or the shared experts."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Router(nn.Module):
    """Sigmoid top-k router with a selection-only bias (``e_score_correction_bias``, as in HF checkpoints).

    The weight is a plain Parameter, not an nn.Linear, on purpose: QAT replaces nn.Linear modules, and the
    router stays in full precision (as in the released quantized checkpoints).
    """

    def __init__(self, cfg: LMConfig):
        super().__init__()
        E = cfg.n_routed_experts
        self.top_k, self.n_group, self.topk_group = cfg.num_experts_per_tok, cfg.n_group, cfg.topk_group
        self.norm_topk_prob, self.scaling = cfg.norm_topk_prob, cfg.routed_scaling_factor
        self.weight = nn.Parameter(torch.randn(E, cfg.hidden_size) * cfg.initializer_range)
        # fp32 whatever the module dtype (see _apply): bf16 would round 0.5 +- 1e-3 steps away
        self.register_buffer("e_score_correction_bias", torch.zeros(E, dtype=torch.float32))
        # tokens per expert counted in training forwards since the last update_bias (not saved); an integer
        # counter, so dtype casts of the module leave it alone (bf16 counts are exact only up to 256)
        self.register_buffer("load", torch.zeros(E, dtype=torch.long), persistent=False)

    def _apply(self, fn, recurse=True):
        """Module.to / .bfloat16() / .cuda() ...: the bias follows the device but stays fp32."""
        bias = self.e_score_correction_bias
        super()._apply(fn, recurse)
        moved = self.e_score_correction_bias
        if moved.dtype != torch.float32:  # re-take the fp32 values (not the rounded ones) on the new device
            src = moved if bias.is_meta else bias
            self.e_score_correction_bias = src.to(device=moved.device, dtype=torch.float32)
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, D] -> (expert ids [N, k] long, routing weights [N, k] in the router's dtype (>= fp32))."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        scores = torch.sigmoid(F.linear(x.to(dtype), self.weight.to(dtype)))  # [N, E]
        choice = scores.detach() + self.e_score_correction_bias.to(dtype)
        if self.n_group > 1:  # group-limited routing: keep the topk_group groups with the best top-2 sums
            N, E = choice.shape
            grouped = choice.view(N, self.n_group, E // self.n_group)
            group_score = grouped.topk(min(2, grouped.shape[-1]), dim=-1).values.sum(-1)  # [N, G]
            keep = torch.zeros_like(group_score, dtype=torch.bool)
            keep.scatter_(1, group_score.topk(self.topk_group, dim=-1).indices, True)
            choice = grouped.masked_fill(~keep[..., None], float("-inf")).view(N, E)
        idx = choice.topk(self.top_k, dim=-1).indices  # [N, k]
        weights = scores.gather(1, idx)
        if self.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        if self.training:
            self.load += torch.bincount(idx.flatten(), minlength=self.load.numel())
        return idx, weights * self.scaling

    @torch.no_grad()
    def update_bias(self, rate: float, rule: str = "sign") -> float:
        """One aux-loss-free balancing step from the counted load; resets the counts.

        rule "sign": bias += rate * sign(mean - load) (DeepSeek-V3); "proportional":
        bias += rate * (mean - load) / mean. Returns the counted load's max/mean (0.0 when nothing was counted).
        """
        load = self.load.float()
        if load.sum() == 0:
            return 0.0
        if rate > 0:
            error = load.mean() - load
            step = torch.sign(error) if rule == "sign" else error / load.mean()
            self.e_score_correction_bias += rate * step
        ratio = (load.max() / load.mean()).item()
        self.load.zero_()
        return ratio


class MoE(nn.Module):
    """Routed experts (a ModuleList of small SwiGLUs) plus the shared expert(s): [B, T, D] -> [B, T, D]."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.top_k = cfg.num_experts_per_tok
        self.router = Router(cfg)
        self.experts = nn.ModuleList(SwiGLU(cfg.hidden_size, cfg.moe_intermediate_size)
                                     for _ in range(cfg.n_routed_experts))
        self.shared_experts = (SwiGLU(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts)
                               if cfg.n_shared_experts > 0 else None)
        self._last_idx: torch.Tensor | None = None  # [N, k] expert choices of the last forward (stats)
        self._stacked: tuple | None = None  # (key, gate_up, down): the fused experts of _all_experts

    @property
    def last_load(self) -> torch.Tensor | None:
        """[E] tokens per expert of the last forward (counted when asked: decoding never asks)."""
        if self._last_idx is None:
            return None
        return torch.bincount(self._last_idx.flatten(), minlength=len(self.experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # [N, D]
        idx, weights = self.router(x)
        self._last_idx = idx
        if self._use_all_experts(x.shape[0]):
            out = self._all_experts(x, idx, weights)
        else:
            flat = idx.flatten()  # [N * k]
            out = self._chosen_experts(x, flat, weights, torch.bincount(flat, minlength=len(self.experts)))
        if self.shared_experts is not None:
            out = out + self.shared_experts(x)
        return out.view(shape)

    def _chosen_experts(self, x: torch.Tensor, flat: torch.Tensor, weights: torch.Tensor,
                        counts: torch.Tensor) -> torch.Tensor:
        """Each chosen expert once on its tokens: x [N, D], flat [N*k] expert ids, weights [N, k], counts [E]
        (assignments per expert) -> [N, D]."""
        order = flat.argsort(stable=True)  # assignments grouped by expert
        token = order // self.top_k
        w = weights.flatten()[order].to(x.dtype)[:, None]
        out = torch.zeros_like(x)
        start = 0
        for e, n in enumerate(counts.tolist()):
            if n:
                tok = token[start:start + n]
                out.index_add_(0, tok, self.experts[e](x[tok]) * w[start:start + n])
                start += n
        return out

    def _use_all_experts(self, n_tokens: int) -> bool:
        if torch.is_grad_enabled():
            return False
        e0 = self.experts[0]
        flops = n_tokens * len(self.experts) * 3 * e0.gate_proj.in_features * e0.gate_proj.out_features
        # plain or exported low-bit experts; QAT's fake-quantized ones keep their own forward
        return flops <= DENSE_EXPERT_FLOPS and self._fusable() is not None

    def _linears(self) -> list[nn.Module]:
        """gate, up, down of every expert, in order (straight from _modules: this runs every decode step)."""
        return [lin for e in self.experts._modules.values()
                for lin in (e._modules["gate_proj"], e._modules["up_proj"], e._modules["down_proj"])]

    def _fusable(self) -> str | None:
        """'linear' or 'quantized' when every expert projection is of that kind (same bits and groups)."""
        from tristream.lm.quant import QuantizedLinear  # quant imports nothing from here; keeps moe light
        lins = self._linears()
        if all(type(m) is nn.Linear for m in lins):
            return "linear"
        if all(type(m) is QuantizedLinear and (m.bits, m.group_size, m.use_kernels) ==
               (lins[0].bits, lins[0].group_size, lins[0].use_kernels) for m in lins):
            return "quantized"
        return None

    def _all_experts(self, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Every expert on every token, unchosen ones weighted 0: x [N, D], idx/weights [N, k] -> [N, D]."""
        gate_up, down = self._fused()
        E = len(self.experts)
        gu = gate_up(x).view(x.shape[0], E, 2, -1)  # [N, E, 2, F]
        gates = torch.zeros(x.shape[0], E, dtype=x.dtype, device=x.device)
        gates.scatter_(1, idx, weights.to(x.dtype))  # [N, E]
        h = F.silu(gu[:, :, 0]) * gu[:, :, 1] * gates[:, :, None]  # [N, E, F]
        if isinstance(down, nn.ModuleList):  # low-bit groups that straddle experts: one call per expert
            return sum(d(h[:, e]) for e, d in enumerate(down))
        return down(h.reshape(x.shape[0], -1))

    def _fused(self) -> tuple[Callable, Callable]:
        """(gate_up [D -> E*2F], down [E*F -> D]) built from the experts, rebuilt whenever a weight changed
        (an optimizer step or load_state_dict bumps its version; .to() moves its storage)."""
        lins = self._linears()
        tensors = [t for m in lins for t in ((m._parameters["weight"],) if type(m) is nn.Linear
                                             else (m._buffers["qweight"], m._buffers["scales"]))]
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)
        if self._stacked is None or self._stacked[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                build = _fuse_linear if self._fusable() == "linear" else _fuse_quantized
                self._stacked = (key, *build(lins))
        return self._stacked[1:]


def _fuse_linear(lins: list[nn.Linear]) -> tuple[Callable, Callable]:
    gate_up = torch.cat([m.weight for i, m in enumerate(lins) if i % 3 != 2])  # [E*2F, D]: gate_0, up_0, gate_1..
    down = torch.cat([m.weight for m in lins[2::3]], dim=1)  # [D, E*F]
    return partial(F.linear, weight=gate_up), partial(F.linear, weight=down)


def _fuse_quantized(lins: list) -> tuple[nn.Module, nn.Module]:
    """Low-bit experts side by side, same codes and scales: rows of gate/up stack (groups run along the
    input); the down projections sit side by side when their groups tile each expert's input (per-channel
    scales become one group per expert), else they stay separate."""
    from tristream.lm.quant import QuantizedLinear
    first, downs = lins[0], lins[2::3]
    rows = [m for i, m in enumerate(lins) if i % 3 != 2]
    gate_up = QuantizedLinear(first.in_features, sum(m.out_features for m in rows), first.bits, first.group_size,
                              kernels=first.use_kernels)
    gate_up.qweight = torch.cat([m.qweight for m in rows])
    gate_up.scales = torch.cat([m.scales for m in rows])
    d0 = downs[0]
    group = d0.group_size or d0.in_features  # per-channel scales become one group per expert block
    if d0.in_features % group:  # groups straddling two experts: each expert's down projection on its own
        return gate_up, nn.ModuleList(downs)
    down = QuantizedLinear(d0.in_features * len(downs), d0.out_features, d0.bits, group, kernels=d0.use_kernels)
    down.qweight = torch.cat([m.qweight for m in downs], dim=1)
    down.scales = torch.cat([m.scales for m in downs], dim=1)
    return gate_up, down
