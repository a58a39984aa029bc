"""A custom policy: a Gaussian MLP on the state vector (images and instruction ignored).

It implements tristream's Policy interface (act, evaluate, value, config_dict; chunk_len and
tokens_per_chunk) and is used by import path, without registering anything:

    tristream train env.name=gym env.gym.id=Pendulum-v1 policy.name=examples.mlp_policy:make_mlp_policy

One action chunk of K actions is one "token": its log-prob is the sum over the chunk's K x A Gaussian
dimensions, so log-probs are [B, 1].
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tristream.policies.base import ActOutput, EvalOutput, Policy


class MLPPolicy(Policy):
    tokens_per_chunk = 1

    def __init__(self, env_spec, chunk_len: int = 1, hidden_dim: int = 64, init_log_std: float = -0.5, **_: Any):
        super().__init__()
        if env_spec.state_dim == 0:
            raise ValueError("MLPPolicy acts on the state vector, and this env has none (state_dim 0)")
        self.env_spec, self.chunk_len = env_spec, chunk_len
        self.hidden_dim, self.init_log_std = hidden_dim, init_log_std
        out = chunk_len * env_spec.action_dim
        self.trunk = nn.Sequential(nn.Linear(env_spec.state_dim, hidden_dim), nn.Tanh(),
                                   nn.Linear(hidden_dim, hidden_dim), nn.Tanh())
        self.mean = nn.Linear(hidden_dim, out)
        self.log_std = nn.Parameter(torch.full((out,), float(init_log_std)))
        self.value_head = nn.Linear(hidden_dim, 1)

    def _hidden(self, obs: dict[str, Any]) -> torch.Tensor:
        return self.trunk(torch.as_tensor(obs["state"], dtype=torch.float32))

    def _dist(self, h: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(torch.tanh(self.mean(h)), self.log_std.exp())

    def act(self, obs: dict[str, Any], deterministic: bool = False, noise=None) -> ActOutput:
        h = self._hidden(obs)
        dist = self._dist(h)
        if deterministic:
            flat = dist.mean
        else:  # noise (optional): per-row noise from the inference worker, so a sample ignores the rest of the batch
            eps = torch.randn_like(dist.mean) if noise is None else noise.normal(dist.mean.shape[1])
            flat = dist.mean + eps * dist.stddev
        logp = dist.log_prob(flat).sum(-1, keepdim=True)
        # the unclipped sample, whose log-prob this is (the env clips): clipping here would bias PPO's ratios
        actions = flat.view(len(h), self.chunk_len, self.env_spec.action_dim)
        return ActOutput(actions=actions, logp=logp, value=self.value_head(h).squeeze(-1))

    def evaluate(self, obs: dict[str, Any], actions: torch.Tensor) -> EvalOutput:
        h = self._hidden(obs)
        dist = self._dist(h)
        flat = torch.as_tensor(actions, dtype=torch.float32).reshape(len(h), -1)
        logp = dist.log_prob(flat).sum(-1, keepdim=True)
        entropy = dist.entropy().sum(-1, keepdim=True).expand_as(logp)
        return EvalOutput(logp=logp, entropy=entropy, value=self.value_head(h).squeeze(-1))

    def value(self, obs: dict[str, Any]) -> torch.Tensor:
        return self.value_head(self._hidden(obs)).squeeze(-1)

    def bc_loss(self, obs: dict[str, Any], actions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return -self.evaluate(obs, actions).logp.mean() / (self.chunk_len * self.env_spec.action_dim)

    def config_dict(self) -> dict[str, Any]:
        return {"chunk_len": self.chunk_len, "hidden_dim": self.hidden_dim, "init_log_std": self.init_log_std}


def make_mlp_policy(env_spec, **kwargs: Any) -> MLPPolicy:
    """Factory: receives the env spec and the keys of the ``policy`` config section."""
    return MLPPolicy(env_spec, **kwargs)
