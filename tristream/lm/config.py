"""LMConfig: the language model's architecture, read from a DeepSeek-V3 / JoyAI-LLM-Flash ``config.json``.

Field names are those of the Hugging Face config (``DeepseekV3ForCausalLM``), so the released
``config.json`` parses unchanged (its weights would not load as they are: see docs/lm.md, Configurations).
Fields tristream adds (``router_bias_update_rate``, ``router_bias_update``, ``initializer_range``) have
defaults. Hugging Face bookkeeping fields that do not change the architecture (``architectures``,
``torch_dtype``, token ids, ...) are accepted and ignored; any other unknown field is an error.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRESET_DIR = Path(__file__).parent / "configs"

# Accepted in a config.json but without effect on the model built here (why: HF runtime/bookkeeping
# fields, or options whose only supported value is the one tristream implements, checked below).
IGNORED_FIELDS = frozenset({
    "architectures", "auto_map", "model_type", "torch_dtype", "transformers_version", "bos_token_id",
    "eos_token_id", "pad_token_id", "use_cache", "pretraining_tp", "attention_bias", "attention_dropout",
    "num_key_value_heads", "ep_size", "aux_loss_alpha", "seq_aux", "quantization_config",
    "_name_or_path", "dtype",
})


@dataclass(frozen=True)
class LMConfig:
    """Architecture of a DeepSeek-V3-style decoder (MLA attention, MoE FFNs, dense MTP)."""

    vocab_size: int
    hidden_size: int  # D
    intermediate_size: int  # dense SwiGLU width (first_k_dense_replace layers and the MTP block)
    moe_intermediate_size: int  # width of one routed / shared expert
    num_hidden_layers: int
    num_attention_heads: int  # H
    n_routed_experts: int  # E (0 = every layer dense)
    n_shared_experts: int  # shared experts, fused into one SwiGLU of width n_shared * moe_intermediate
    num_experts_per_tok: int  # top-k
    first_k_dense_replace: int  # the first k layers use the dense FFN
    kv_lora_rank: int  # width of the compressed KV latent (what the cache stores)
    qk_nope_head_dim: int
    qk_rope_head_dim: int  # decoupled RoPE key, shared by all heads
    v_head_dim: int
    q_lora_rank: int | None = None  # None or 0: plain query projection
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = True
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    num_nextn_predict_layers: int = 1  # MTP blocks (0 or 1 supported)
    tie_word_embeddings: bool = False
    n_group: int = 1  # group-limited routing: experts in n_group groups, keep the best topk_group
    topk_group: int = 1
    scoring_func: str = "sigmoid"
    topk_method: str = "noaux_tc"
    moe_layer_freq: int = 1
    hidden_act: str = "silu"
    rope_scaling: dict | None = None
    router_bias_update_rate: float = 1e-3  # aux-loss-free balancing step size (0 disables)
    # "sign": DeepSeek-V3's bias += rate * sign(mean load - load); "proportional": rate * (mean - load) / mean,
    # which shrinks its step as the load evens out instead of oscillating by +-rate around balance
    router_bias_update: str = "sign"
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        checks = [
            ("hidden_size", self.hidden_size > 0, "must be > 0"),
            ("intermediate_size", self.intermediate_size > 0, "must be > 0"),
            ("moe_intermediate_size", self.n_routed_experts == 0 or self.moe_intermediate_size > 0,
             "must be > 0"),
            ("qk_nope_head_dim", self.qk_nope_head_dim > 0, "must be > 0"),
            ("v_head_dim", self.v_head_dim > 0, "must be > 0"),
            ("rope_theta", self.rope_theta > 0, "must be > 0"),
            ("rms_norm_eps", self.rms_norm_eps > 0, "must be > 0"),
            ("max_position_embeddings", self.max_position_embeddings > 0, "must be > 0"),
            ("num_hidden_layers", self.num_hidden_layers > 0, "must be > 0"),
            ("num_attention_heads", self.num_attention_heads > 0, "must be > 0"),
            ("vocab_size", self.vocab_size > 1, "must be > 1"),
            ("kv_lora_rank", self.kv_lora_rank > 0, "must be > 0"),
            ("qk_rope_head_dim", self.qk_rope_head_dim > 0 and self.qk_rope_head_dim % 2 == 0,
             "must be a positive even number"),
            ("first_k_dense_replace", 0 <= self.first_k_dense_replace <= self.num_hidden_layers,
             f"must be in [0, num_hidden_layers={self.num_hidden_layers}]"),
            ("num_experts_per_tok", self.n_routed_experts == 0
             or 1 <= self.num_experts_per_tok <= self.n_routed_experts,
             f"must be in [1, n_routed_experts={self.n_routed_experts}]"),
            ("num_nextn_predict_layers", self.num_nextn_predict_layers in (0, 1), "must be 0 or 1"),
            ("scoring_func", self.scoring_func == "sigmoid", "only 'sigmoid' is implemented"),
            ("topk_method", self.topk_method == "noaux_tc", "only 'noaux_tc' is implemented"),
            ("moe_layer_freq", self.moe_layer_freq == 1, "only 1 is implemented"),
            ("hidden_act", self.hidden_act == "silu", "only 'silu' (SwiGLU) is implemented"),
            ("n_group", self.n_routed_experts == 0 or (self.n_group >= 1
             and self.n_routed_experts % self.n_group == 0), "must divide n_routed_experts"),
            ("topk_group", 1 <= self.topk_group <= self.n_group, f"must be in [1, n_group={self.n_group}]"),
            # top-k may only pick among the experts of the kept groups (the others are masked to -inf)
            ("num_experts_per_tok", self.n_routed_experts == 0 or self.n_group < 1
             or self.num_experts_per_tok * self.n_group <= self.topk_group * self.n_routed_experts,
             (f"must be <= topk_group * n_routed_experts / n_group = {self.topk_group} * "
              f"{self.n_routed_experts} / {self.n_group} (the experts of the kept groups)")),
            ("rope_scaling", self.rope_scaling is None, "only null (plain RoPE) is implemented"),
            ("router_bias_update_rate", self.router_bias_update_rate >= 0, "must be >= 0"),
            ("router_bias_update", self.router_bias_update in ("sign", "proportional"),
             "must be 'sign' or 'proportional'"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ValueError(f"LMConfig.{name}={getattr(self, name)!r}: {why}")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def is_moe_layer(self, i: int) -> bool:
        return self.n_routed_experts > 0 and i >= self.first_k_dense_replace

    @classmethod
    def from_json(cls, src: str | Path | dict[str, Any]) -> LMConfig:
        """Build from a config.json path or an already-parsed dict (HF field names)."""
        if isinstance(src, (str, Path)):
            with open(src) as f:
                src = json.load(f)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(src) - set(fields) - IGNORED_FIELDS)
        if unknown:
            raise ValueError(f"LMConfig: unknown field(s) {unknown}; valid fields: {sorted(fields)}")
        required = [n for n, f in fields.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [n for n in required if n not in src]
        if missing:
            raise ValueError(f"LMConfig: missing required field(s) {missing}")
        kwargs = {k: v for k, v in src.items() if k in fields}
        if not kwargs.get("q_lora_rank"):
            kwargs["q_lora_rank"] = None
        return cls(**kwargs)

    @classmethod
    def preset(cls, name: str) -> LMConfig:
        """Load ``tristream/lm/configs/<name>.json``."""
        path = PRESET_DIR / f"{name}.json"
        if not path.exists():
            raise ValueError(f"LMConfig: unknown preset {name!r}; valid presets: {preset_names()}")
        return cls.from_json(path)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))
