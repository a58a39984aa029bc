"""VLAConfig: every knob of the small from-scratch VLA policy (see model.py)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..base import config_from_kwargs

HEADS = ("gaussian", "discrete")
POOLS = ("spatial_softmax", "mean")
LANG_ENCODERS = ("attention", "bigram", "bow")
GAUSSIAN_TOKENS = ("chunk", "dim")


@dataclass
class VLAConfig:
    # --- action chunking and head ---
    chunk_len: int = 4  # K: actions predicted per policy call
    head: str = "gaussian"  # "gaussian" (1 token per chunk) or "discrete" (K*A tokens, 256 bins each)

    # --- image encoder: a CNN shared across cameras, FiLM-conditioned on the instruction ---
    conv_channels: tuple[int, ...] = (8, 32, 32, 32)
    conv_strides: tuple[int, ...] = (2, 2, 2, 1)  # 64x64 -> 8x8 feature map
    group_norm: bool = True  # GroupNorm (8 groups) before every FiLM; off = plain conv+FiLM
    pool: str = "spatial_softmax"  # "spatial_softmax": 2 coords per channel; "mean": global average pool

    # --- instruction encoder ---
    max_len: int = 16  # tokens kept per instruction (padded / truncated)
    oov_buckets: int = 64  # unknown words hash into this many extra ids
    word_dim: int = 32
    lang_dim: int = 64
    # "bow": bag of words (blind to word order); "bigram": bow + hashed adjacent word pairs; "attention":
    # order-aware (positions + one self-attention block). Neither gave a better SFT on the tabletop mix
    # (docs/policies.md)
    lang_encoder: str = "bow"
    bigram_buckets: int = 1024  # lang_encoder="bigram": hash buckets for adjacent word pairs

    # --- proprioception ---
    proprio_dim: int = 64
    normalize_state: bool = False  # running mean/var normalisation of the state, updated by Policy.observe

    # --- trunk and value ---
    hidden_dim: int = 256
    trunk_layers: int = 2

    # --- Gaussian head ---
    init_log_std: float = -1.0  # per action dim, state independent
    min_log_std: float = -4.0  # log_std is soft-bounded to (min, max) by a tanh, so it keeps a gradient
    max_log_std: float = 0.5
    bc_nll_weight: float = 0.05  # bc_loss = masked MSE(mean) + this * masked per-element NLL
    # log-prob units seen by the RL losses: "chunk" (one per chunk) or "dim" (one per action dimension and
    # chunk step, like the discrete head's tokens; see heads.GaussianChunkHead). No weight depends on it.
    gaussian_tokens: str = "chunk"

    # --- discrete head ---
    n_bins: int = 256  # uniform bins over [-1, 1]; an action is a bin centre
    token_dim: int = 32  # per-token feature size before the shared logits layer
    init_bin_width: float = 0.3  # initial width of the ordinal prior over bins (see heads.DiscreteTokenHead)

    def __post_init__(self) -> None:
        # JSON round trips turn tuples into lists
        self.conv_channels = tuple(int(c) for c in self.conv_channels)
        self.conv_strides = tuple(int(s) for s in self.conv_strides)
        if self.head not in HEADS:
            raise ValueError(f"VLAConfig.head must be one of {HEADS}, got {self.head!r}")
        if self.gaussian_tokens not in GAUSSIAN_TOKENS:
            raise ValueError(f"VLAConfig.gaussian_tokens must be one of {GAUSSIAN_TOKENS}, got {self.gaussian_tokens!r}")
        if self.lang_encoder not in LANG_ENCODERS:
            raise ValueError(f"VLAConfig.lang_encoder must be one of {LANG_ENCODERS}, got {self.lang_encoder!r}")
        if self.pool not in POOLS:
            raise ValueError(f"VLAConfig.pool must be one of {POOLS}, got {self.pool!r}")
        if len(self.conv_channels) != len(self.conv_strides) or not self.conv_channels:
            raise ValueError(
                f"conv_channels {self.conv_channels} and conv_strides {self.conv_strides} must be non-empty "
                "and of equal length"
            )
        if self.group_norm and any(c % 8 for c in self.conv_channels):
            raise ValueError(f"group_norm needs conv_channels divisible by 8, got {self.conv_channels}")
        if self.chunk_len < 1 or self.max_len < 1 or self.n_bins < 2 or self.bigram_buckets < 1:
            raise ValueError("chunk_len, max_len and bigram_buckets must be >= 1 and n_bins >= 2")
        if not self.min_log_std < self.init_log_std < self.max_log_std:
            raise ValueError(
                f"need min_log_std < init_log_std < max_log_std, got "
                f"{self.min_log_std} < {self.init_log_std} < {self.max_log_std}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["conv_channels"] = list(self.conv_channels)
        d["conv_strides"] = list(self.conv_strides)
        return d

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "VLAConfig":
        """Like ``VLAConfig(**kwargs)`` but unknown keys raise a ValueError that lists the valid ones."""
        return config_from_kwargs(cls, kwargs, "VLAConfig field(s)")
