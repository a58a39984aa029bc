"""VLAPolicy: a small vision-language-action policy trained from scratch on CPU.

    images uint8 [B, n_cams, H, W, 3] --/255--> CNN shared over cameras, every layer FiLM'd by
                                               (instruction vector + camera embedding) --> spatial softmax
    instruction list[str] --tokenizer--> word embeddings (--self-attention, lang_encoder=attention)
                                         --masked mean--> MLP --> instruction vector
    state [B, S] --(optional running norm)--> MLP --> proprio vector
    [visual, instruction, proprio] --trunk MLP--> hidden --+--> action head (gaussian | discrete)
                                                          +--> value MLP --> [B]

Language enters twice: through FiLM (so it decides which object's features the CNN extracts - the policy
must find the object whose colour the instruction names) and directly into the trunk.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tristream.noise import RowNoise

from ..base import ActOutput, EvalOutput, Policy
from .config import VLAConfig
from .encoders import FiLMConvEncoder, InstructionEncoder, ProprioEncoder, RunningNorm, mlp
from .heads import make_head
from .tokenizer import Tokenizer


class VLAPolicy(Policy):
    registry_name = "vla"  # the name io.save_policy records, so load_policy can rebuild it

    def __init__(self, env_spec, config: VLAConfig | None = None):
        super().__init__()
        cfg = config if config is not None else VLAConfig()
        self.env_spec, self.config = env_spec, cfg
        self.chunk_len = cfg.chunk_len
        self.action_dim = env_spec.action_dim
        self.num_cameras = env_spec.num_cameras

        self.tokenizer = Tokenizer(cfg.max_len, cfg.oov_buckets)
        self.lang = InstructionEncoder(self.tokenizer.vocab_size, cfg.word_dim, cfg.lang_dim, cfg.lang_encoder,
                                       cfg.max_len, bigram_buckets=cfg.bigram_buckets)
        if self.num_cameras == 0 and env_spec.state_dim == 0:
            raise ValueError("VLAPolicy needs at least one camera or a state vector; the env spec has neither")
        # a state-only env (no cameras) or a pixels-only env (no state) simply leaves that encoder out
        self.vision = FiLMConvEncoder(
            self.num_cameras, cfg.lang_dim, cfg.conv_channels, cfg.conv_strides, cfg.group_norm, cfg.pool
        ) if self.num_cameras else None
        self.proprio = ProprioEncoder(env_spec.state_dim, cfg.proprio_dim, cfg.normalize_state) \
            if env_spec.state_dim else None
        trunk_in = (self.vision.out_dim if self.vision else 0) + cfg.lang_dim + (cfg.proprio_dim if self.proprio else 0)
        self.trunk = mlp([trunk_in] + [cfg.hidden_dim] * cfg.trunk_layers)
        self.head = make_head(cfg.head, cfg.hidden_dim, cfg.chunk_len, self.action_dim, cfg)
        self.tokens_per_chunk = self.head.tokens_per_chunk
        self.value_head = mlp([cfg.hidden_dim, cfg.hidden_dim // 2, 1], last_act=False)

    # ------------------------------------------------------------------ observation -> hidden
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _prepare(self, obs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dev = self.device
        images = obs["images"]
        images = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
        if images.dtype != torch.uint8:
            raise TypeError(f"obs['images'] must be uint8 [B, n_cams, H, W, 3], got dtype {images.dtype}")
        if images.dim() != 5 or images.shape[1] != self.num_cameras or images.shape[-1] != 3:
            raise ValueError(
                f"obs['images'] must be [B, {self.num_cameras}, H, W, 3], got {tuple(images.shape)}"
            )
        b = images.shape[0]
        state = torch.as_tensor(obs["state"], dtype=torch.float32, device=dev)
        if state.shape != (b, self.env_spec.state_dim):
            raise ValueError(f"obs['state'] must be [{b}, {self.env_spec.state_dim}], got {tuple(state.shape)}")
        instr = obs["instruction"]
        instr = [instr] * b if isinstance(instr, str) else list(instr)
        if len(instr) != b:
            raise ValueError(f"obs['instruction'] has {len(instr)} strings for a batch of {b}")
        return images.to(dev, non_blocking=True), state, self.tokenizer(instr, device=dev)

    def encode(self, obs: dict[str, Any]) -> torch.Tensor:
        """Observation batch -> trunk features [B, hidden_dim]."""
        images, state, ids = self._prepare(obs)
        with self.autocast():  # run.precision=bf16: encoders and trunk; the heads get fp32 features
            lang = self.lang(ids)
            parts = [lang]
            if self.vision is not None:
                parts.insert(0, self.vision(images, lang))
            if self.proprio is not None:
                parts.append(self.proprio(state))
            return self.trunk(torch.cat(parts, dim=-1)).float()

    # ------------------------------------------------------------------ Policy interface
    def act(self, obs: dict[str, Any], deterministic: bool = False, noise: RowNoise | None = None) -> ActOutput:
        h = self.encode(obs)
        actions, logp = self.head.sample(h, deterministic, noise)
        return ActOutput(actions=actions, logp=logp, value=self.value_head(h).squeeze(-1))

    def evaluate(self, obs: dict[str, Any], actions: torch.Tensor) -> EvalOutput:
        h = self.encode(obs)
        actions = torch.as_tensor(actions, dtype=torch.float32, device=h.device)
        logp, entropy = self.head.evaluate(h, actions)
        return EvalOutput(logp=logp, entropy=entropy, value=self.value_head(h).squeeze(-1))

    def value(self, obs: dict[str, Any]) -> torch.Tensor:
        return self.value_head(self.encode(obs)).squeeze(-1)

    def observe(self, obs: dict[str, Any]) -> None:
        if self.proprio is not None and isinstance(self.proprio.norm, RunningNorm):
            self.proprio.norm.update(torch.as_tensor(obs["state"], dtype=torch.float32, device=self.device))

    def bc_loss(self, obs: dict[str, Any], actions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Gaussian: masked MSE(mean) + bc_nll_weight * NLL; discrete: masked cross-entropy on bins.
        mask [B, K] marks valid chunk steps (padding past an episode's end = False)."""
        h = self.encode(obs)
        actions = torch.as_tensor(actions, dtype=torch.float32, device=h.device)
        if mask is not None:
            mask = torch.as_tensor(mask, device=h.device)
        return self.head.bc_loss(h, actions, mask)

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    def set_gaussian_tokens(self, tokens: str) -> None:
        """Split the Gaussian head's log-probs per chunk ("chunk") or per action dimension ("dim"), e.g. for
        RL from a policy saved with the other setting; recorded in the config so copies (inference
        workers, checkpoints) do the same."""
        if self.config.head != "gaussian":
            raise ValueError(f"gaussian_tokens applies to the Gaussian head; this policy's head is {self.config.head!r}")
        self.head.set_tokens(tokens)
        self.config.gaussian_tokens = tokens
        self.tokens_per_chunk = self.head.tokens_per_chunk


def make_vla_policy(env_spec, **cfg_kwargs: Any) -> VLAPolicy:
    """Registry factory: ``make_policy("vla", env_spec, head="discrete", chunk_len=8, ...)``."""
    return VLAPolicy(env_spec, VLAConfig.from_kwargs(**cfg_kwargs))
