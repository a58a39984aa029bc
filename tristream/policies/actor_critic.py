"""Plain actor-critic policies of the size other RL libraries use, for envs that need no language.

    "mlp":  state [B, S] --running norm--> actor MLP --> Gaussian head      (Stable-Baselines3's MlpPolicy:
                                      \\--> critic MLP --> value [B]        separate actor and critic towers)
    "cnn":  images uint8 [B, n_cams, H, W, 3] --/255--> conv stack shared over cameras --flatten--> linear
            (+ the normalised state, when the env has one) --> actor / critic towers (none by default)
            --> Gaussian head / value                                       (Sample Factory's default encoder)

The instruction is ignored. Initialisation follows CleanRL and SB3 (``ortho_init``): orthogonal weights with
gain sqrt(2) in hidden layers, 0.01 on the action mean and 1 on the value output, zero biases. The Gaussian
head is the VLA's (heads.GaussianChunkHead) parameterised as SB3's: a state-independent, free log std per
action dimension and an unsquashed mean (``squash_mean`` / ``bound_log_std`` give the VLA's tanh forms);
sampled actions are not clipped (the env clips), so log-probs are exact.

Use them to compare tristream's runtime with a peer at the peer's network size, or as a fast policy for a
state-based env: ``policy.name=mlp policy.hidden_dim=64 policy.init_log_std=0 policy.chunk_len=1``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tristream.noise import RowNoise

from .base import ActOutput, EvalOutput, Policy, config_from_kwargs
from .vla.encoders import RunningNorm
from .vla.heads import GaussianChunkHead

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}


@dataclass
class ActorCriticConfig:
    chunk_len: int = 1
    hidden_dim: int = 64  # width of every actor / critic layer; for "cnn" also the encoder's output size
    layers: int = 2  # hidden layers of each of the actor and critic towers (0: heads on the encoder output)
    activation: str = "tanh"
    ortho_init: bool = True
    init_log_std: float = 0.0
    min_log_std: float = -5.0
    max_log_std: float = 2.0
    # SB3 / CleanRL / Sample Factory: an unsquashed mean (the env clips the action) and a free log std; True
    # gives the VLA's tanh-squashed mean and tanh-bounded log std
    squash_mean: bool = False
    bound_log_std: bool = False
    # running mean / var of the state (SB3's VecNormalize obs), clipped to +-10; updated by observe(), once per
    # global step after its update, so an update trains with the statistics its data were collected with
    normalize_state: bool = True
    images: bool = False  # encode the cameras with the conv stack ("cnn")
    conv_channels: tuple[int, ...] = (32, 64, 128)
    conv_kernels: tuple[int, ...] = (8, 4, 3)
    conv_strides: tuple[int, ...] = (4, 2, 2)
    head: str = "gaussian"

    def __post_init__(self) -> None:
        for name in ("conv_channels", "conv_kernels", "conv_strides"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.head != "gaussian":
            raise ValueError(f"the mlp and cnn policies have a Gaussian head only; got policy.head={self.head!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if not (len(self.conv_channels) == len(self.conv_kernels) == len(self.conv_strides) >= 1):
            raise ValueError(f"conv_channels {self.conv_channels}, conv_kernels {self.conv_kernels} and conv_strides "
                             f"{self.conv_strides} must be non-empty and of equal length")
        if self.chunk_len < 1 or self.hidden_dim < 1 or self.layers < 0:
            raise ValueError("chunk_len and hidden_dim must be >= 1 and layers >= 0")
        if not self.min_log_std < self.init_log_std < self.max_log_std:
            raise ValueError(f"need min_log_std < init_log_std < max_log_std, got "
                             f"{self.min_log_std} < {self.init_log_std} < {self.max_log_std}")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "ActorCriticConfig":
        return config_from_kwargs(cls, kwargs, "mlp / cnn policy setting(s)")


def _tower(in_dim: int, width: int, layers: int, act: type[nn.Module]) -> tuple[nn.Sequential, int]:
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(in_dim, width), act()]
        in_dim = width
    return nn.Sequential(*mods), in_dim


class ConvEncoder(nn.Module):
    """uint8 [B, n_cams, H, W, 3] -> [B, out_dim]: one conv stack shared over cameras, flattened, then a linear
    layer over all cameras' features."""

    def __init__(self, n_cams: int, size: int, cfg: ActorCriticConfig, act: type[nn.Module]):
        super().__init__()
        convs: list[nn.Module] = []
        c_in = 3
        for c, k, s in zip(cfg.conv_channels, cfg.conv_kernels, cfg.conv_strides):
            convs += [nn.Conv2d(c_in, c, k, s), act()]
            c_in = c
        self.convs = nn.Sequential(*convs)
        try:
            with torch.no_grad():
                flat = self.convs(torch.zeros(1, 3, size, size)).numel()
        except RuntimeError:  # a kernel larger than what is left of the image
            flat = 0
        if flat == 0:
            raise ValueError(f"the conv stack leaves nothing of a {size}x{size} image; use smaller kernels/strides")
        self.linear = nn.Sequential(nn.Linear(n_cams * flat, cfg.hidden_dim), act())
        self.out_dim = cfg.hidden_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, n, h, w, _ = images.shape
        # The permuted view is channels-last NCHW, kept so: CPU convolutions (oneDNN) run faster on it than on a
        # contiguous copy (forward and backward of this stack ~1.3x); the flatten below still reads C, H, W.
        x = images.reshape(b * n, h, w, 3).permute(0, 3, 1, 2).float().div_(255.0)
        return self.linear(self.convs(x).reshape(b, -1))


class ActorCriticPolicy(Policy):
    def __init__(self, env_spec, config: ActorCriticConfig, registry_name: str):
        super().__init__()
        cfg = self.config = config
        self.registry_name = registry_name
        self.env_spec, self.chunk_len, self.action_dim = env_spec, cfg.chunk_len, env_spec.action_dim
        act = ACTIVATIONS[cfg.activation]
        if cfg.images and env_spec.num_cameras == 0:
            raise ValueError(f"policy {registry_name!r} encodes camera images and this env has none; use "
                             f"policy.name=mlp for a state-only env")
        if not cfg.images and env_spec.state_dim == 0:
            raise ValueError(f"policy {registry_name!r} acts on the state vector and this env has none (pixels "
                             f"only); use policy.name=cnn")
        self.vision = ConvEncoder(env_spec.num_cameras, env_spec.image_size, cfg, act) if cfg.images else None
        self.norm = (RunningNorm(env_spec.state_dim) if cfg.normalize_state else nn.Identity()) \
            if env_spec.state_dim else None
        feat = (self.vision.out_dim if self.vision else 0) + env_spec.state_dim
        self.actor, actor_out = _tower(feat, cfg.hidden_dim, cfg.layers, act)
        self.critic, critic_out = _tower(feat, cfg.hidden_dim, cfg.layers, act)
        self.head = GaussianChunkHead(actor_out, cfg.chunk_len, self.action_dim, cfg.init_log_std,
                                      cfg.min_log_std, cfg.max_log_std, squash_mean=cfg.squash_mean,
                                      bound_log_std=cfg.bound_log_std)
        self.value_out = nn.Linear(critic_out, 1)
        self.tokens_per_chunk = self.head.tokens_per_chunk
        if cfg.ortho_init:
            self._ortho_init()

    def _ortho_init(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.orthogonal_(m.weight, gain=math.sqrt(2))
                nn.init.zeros_(m.bias)
        nn.init.orthogonal_(self.head.mean.weight, gain=0.01)
        nn.init.orthogonal_(self.value_out.weight, gain=1.0)

    def _features(self, obs: dict[str, Any]) -> torch.Tensor:
        parts = []
        if self.vision is not None:
            images = obs["images"]
            images = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
            with self.autocast():  # run.precision=bf16: the conv stack, the bulk of the compute
                parts.append(self.vision(images).float())
        if self.norm is not None:
            parts.append(self.norm(torch.as_tensor(obs["state"], dtype=torch.float32)))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def act(self, obs: dict[str, Any], deterministic: bool = False, noise: RowNoise | None = None) -> ActOutput:
        x = self._features(obs)
        actions, logp = self.head.sample(self.actor(x), deterministic, noise)
        return ActOutput(actions=actions, logp=logp, value=self.value_out(self.critic(x)).squeeze(-1))

    def evaluate(self, obs: dict[str, Any], actions: torch.Tensor) -> EvalOutput:
        x = self._features(obs)
        logp, entropy = self.head.evaluate(self.actor(x), torch.as_tensor(actions, dtype=torch.float32))
        return EvalOutput(logp=logp, entropy=entropy, value=self.value_out(self.critic(x)).squeeze(-1))

    def value(self, obs: dict[str, Any]) -> torch.Tensor:
        return self.value_out(self.critic(self._features(obs))).squeeze(-1)

    def observe(self, obs: dict[str, Any]) -> None:
        if isinstance(self.norm, RunningNorm):
            self.norm.update(torch.as_tensor(obs["state"], dtype=torch.float32))

    def bc_loss(self, obs: dict[str, Any], actions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.actor(self._features(obs))
        return self.head.bc_loss(h, torch.as_tensor(actions, dtype=torch.float32), mask)

    def config_dict(self) -> dict[str, Any]:
        d = asdict(self.config)
        for name in ("conv_channels", "conv_kernels", "conv_strides"):
            d[name] = list(d[name])
        return d


def make_mlp_policy(env_spec, **kwargs: Any) -> ActorCriticPolicy:
    """``policy.name=mlp``: state-based actor and critic MLPs (SB3's MlpPolicy)."""
    return ActorCriticPolicy(env_spec, ActorCriticConfig.from_kwargs(**{"images": False, **kwargs}), "mlp")


def make_cnn_policy(env_spec, **kwargs: Any) -> ActorCriticPolicy:
    """``policy.name=cnn``: Sample Factory's default conv encoder (32-64-128 channels, 8/4/3 kernels, strides
    4/2/2, ELU, a linear layer of hidden_dim) shared by the Gaussian head and the value output."""
    defaults = {"images": True, "activation": "elu", "layers": 0}
    return ActorCriticPolicy(env_spec, ActorCriticConfig.from_kwargs(**{**defaults, **kwargs}), "cnn")
