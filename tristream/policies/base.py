"""The policy interface: (images, instruction, proprio state) -> action chunk, log-probs, value.

A "token" is one log-probability unit of the action head: one per action chunk for a continuous
(Gaussian) head, one per (chunk step, action dim) for a discrete head. Log-probs come as [B, L] with
L = ``tokens_per_chunk``; the RL losses work on that token axis.

Observation batches are dicts of tensors:
    images:       uint8 [B, n_cameras, H, W, 3]
    state:        float32 [B, state_dim]
    instruction:  list[str] of length B
Actions are float32 [B, K, action_dim] (K = chunk length).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from tristream.noise import RowNoise


@dataclass
class ActOutput:
    actions: torch.Tensor  # [B, K, A] float32
    logp: torch.Tensor  # [B, L] behaviour log-probs of the sampled actions
    value: torch.Tensor  # [B]


@dataclass
class EvalOutput:
    logp: torch.Tensor  # [B, L] current log-probs of the given actions
    entropy: torch.Tensor  # [B, L]
    value: torch.Tensor  # [B]


class Policy(nn.Module):
    """Subclasses implement ``act`` and ``evaluate`` and set ``chunk_len`` and ``tokens_per_chunk``."""

    chunk_len: int
    tokens_per_chunk: int
    precision: str = "fp32"  # run.precision, set by from_config.apply_rl_options

    def autocast(self):
        """The context a policy runs its encoder and trunk in: bfloat16 autocast where ``precision`` is "bf16"
        (weights, gradients and optimizer state stay fp32; heads, log-probs and values are computed in fp32
        from the trunk's output), else nothing."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(next(self.parameters()).device.type, dtype=torch.bfloat16)

    def act(self, obs: dict[str, Any], deterministic: bool = False, noise: RowNoise | None = None) -> ActOutput:
        """Sample (or, ``deterministic``, take the mode of) an action chunk per row. ``noise``: draw the
        sampling noise from it (row i's from ``noise``'s row i) instead of torch's global stream, so a row's
        sample does not depend on the rest of the batch. Optional for a policy: the inference worker passes
        it only when ``act`` declares it."""
        raise NotImplementedError

    def evaluate(self, obs: dict[str, Any], actions: torch.Tensor) -> EvalOutput:
        raise NotImplementedError

    def token_mask(self, actions: torch.Tensor) -> torch.Tensor | None:
        """[B, L] float mask of the log-prob units that count in the losses (a language policy's generated
        tokens, not its padding); None: all of them."""
        return None

    def configure_rollout(self, speculative_k: int = 0, weights: str = "fp32", group_size: int = 32) -> None:
        """How ``act`` generates on the inference worker (``rollout.speculative_k``, ``rollout.weights``, the
        low-bit group size); only a language policy has these choices."""
        if speculative_k or weights != "fp32":
            raise ValueError(f"rollout.speculative_k={speculative_k} and rollout.weights={weights!r} apply to language "
                             f"policies (policy.name=lm); {type(self).__name__} acts with its own fp32 weights "
                             f"(set rollout.speculative_k=0 rollout.weights=fp32)")

    def rollout_stats(self) -> dict[str, float]:
        """Generation counters since the last call (a language policy's tokens and speculative rounds)."""
        return {}

    def value(self, obs: dict[str, Any]) -> torch.Tensor:
        """State value [B] (used for bootstrapping)."""
        raise NotImplementedError

    def observe(self, obs: dict[str, Any]) -> None:
        """Update input statistics (e.g. a running state normaliser) from a batch of observations. The
        learner calls it once per global step, after that step's update, with the step's observations, so
        every optimizer step of an update sees the statistics the data were collected with; SFT calls it
        before each batch. Forward passes never change the statistics. Default: no statistics."""

    def bc_loss(self, obs: dict[str, Any], actions: torch.Tensor) -> torch.Tensor:
        """Behaviour-cloning loss (scalar) for expert action chunks [B, K, A]; default: mean NLL."""
        return -self.evaluate(obs, actions).logp.sum(-1).mean()

    def config_dict(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments, saved beside the weights."""
        raise NotImplementedError


def config_from_kwargs(cls, kwargs: dict[str, Any], what: str):
    """``cls(**kwargs)`` for a policy's config dataclass; unknown keys raise a ValueError that names them and
    lists the valid ones (``what`` says whose keys they are)."""
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; valid: {sorted(valid)}")
    return cls(**kwargs)
