"""Interchangeable action heads: hidden [B, D] -> action chunks [B, K, A] with per-token log-probs.

Every head has ``tokens_per_chunk`` (L) and four methods:
    sample(h, deterministic, noise) -> (actions [B, K, A], logp [B, L])
    evaluate(h, actions)      -> (logp [B, L], entropy [B, L])
    bc_loss(h, actions, mask) -> scalar; mask [B, K] marks valid chunk steps (None = all valid)
    mode(h)                   -> actions [B, K, A], the deterministic action
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tristream.noise import RowNoise, sample_categorical

from .config import GAUSSIAN_TOKENS

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _step_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """[B, K] mask (or None) -> float [B, K, A] broadcast like ``like`` ([B, K, A])."""
    if mask is None:
        return torch.ones_like(like)
    if mask.shape != like.shape[:2]:
        raise ValueError(f"mask must be [B, K] = {tuple(like.shape[:2])}, got {tuple(mask.shape)}")
    return mask.to(like.dtype).unsqueeze(-1).expand_as(like)


class GaussianChunkHead(nn.Module):
    """A diagonal Gaussian over the whole chunk; by default ONE token (log-prob unit) per chunk.

    mean = tanh(W h) in [-1, 1] (only the mean is squashed; the distribution itself is a plain, unsquashed
    Normal, so log-probs are exact Normal log-probs). std is state independent: one learned log_std per
    action dim, shared over the K chunk steps and soft-bounded into (min_log_std, max_log_std) with a tanh.
    ``squash_mean=False`` / ``bound_log_std=False``: mean = W h and log_std a free parameter (clamped to the
    bounds only where it is used), as Stable-Baselines3 and CleanRL parameterise it.
    Sampled actions may leave [-1, 1]: the env clips them; log-probs always refer to the unclipped sample.
    logp [B, 1] = sum over K and A of Normal(mean, std).log_prob(action); entropy [B, 1] likewise summed.
    With ``tokens="dim"`` every action dimension of every chunk step is its own token instead, as for the
    discrete head: logp/entropy [B, K*A] in (k, a) order (the same joint density, split, so ratio-based
    trust regions act per dimension; see set_tokens).
    """

    def __init__(
        self,
        hidden_dim: int,
        chunk_len: int,
        action_dim: int,
        init_log_std: float = -1.0,
        min_log_std: float = -4.0,
        max_log_std: float = 0.5,
        bc_nll_weight: float = 0.05,
        tokens: str = "chunk",
        squash_mean: bool = True,
        bound_log_std: bool = True,
    ):
        super().__init__()
        self.chunk_len, self.action_dim = chunk_len, action_dim
        self.squash_mean, self.bound_log_std = squash_mean, bound_log_std
        self.set_tokens(tokens)
        self.min_log_std, self.max_log_std = min_log_std, max_log_std
        self.bc_nll_weight = bc_nll_weight
        self.mean = nn.Linear(hidden_dim, chunk_len * action_dim)
        nn.init.orthogonal_(self.mean.weight, gain=0.01)  # start near the zero action
        nn.init.zeros_(self.mean.bias)
        self.log_std_param = nn.Parameter(torch.zeros(action_dim))
        self.set_log_std(init_log_std)

    def set_tokens(self, tokens: str) -> None:
        """"chunk": one log-prob unit per chunk (the joint density); "dim": one per action dimension and chunk
        step. Changes no weight, only how log-probs are split into the losses' tokens."""
        if tokens not in GAUSSIAN_TOKENS:
            raise ValueError(f"Gaussian head tokens must be one of {GAUSSIAN_TOKENS}, got {tokens!r}")
        self.tokens = tokens
        self.tokens_per_chunk = 1 if tokens == "chunk" else self.chunk_len * self.action_dim

    def _tokens(self, per_element: torch.Tensor) -> torch.Tensor:
        """[B, K, A] -> [B, L]: summed over the chunk (L = 1) or flattened (L = K*A)."""
        if self.tokens == "chunk":
            return per_element.sum(dim=(1, 2)).unsqueeze(-1)
        return per_element.flatten(1)

    @torch.no_grad()
    def set_log_std(self, log_std: float) -> None:
        """Set every action dim's log_std (e.g. to restore exploration after behaviour cloning)."""
        lo, hi = self.min_log_std, self.max_log_std
        if not lo < log_std < hi:
            raise ValueError(f"log_std {log_std} outside the bounds ({lo}, {hi})")
        self.log_std_param.fill_(math.atanh(2.0 * (log_std - lo) / (hi - lo) - 1.0) if self.bound_log_std else log_std)

    def log_std(self) -> torch.Tensor:  # [A]
        lo, hi = self.min_log_std, self.max_log_std
        if not self.bound_log_std:
            return self.log_std_param.clamp(lo, hi)
        return lo + 0.5 * (hi - lo) * (torch.tanh(self.log_std_param) + 1.0)

    def dist_params(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.mean(h)
        mean = (torch.tanh(mean) if self.squash_mean else mean).view(-1, self.chunk_len, self.action_dim)
        return mean, self.log_std().expand_as(mean)

    @staticmethod
    def _log_prob(actions: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
        """Per-element Normal log-density [B, K, A]."""
        return -0.5 * ((actions - mean) * torch.exp(-log_std)) ** 2 - log_std - _LOG_SQRT_2PI

    def mode(self, h: torch.Tensor) -> torch.Tensor:
        return self.dist_params(h)[0]

    def sample(self, h: torch.Tensor, deterministic: bool = False, noise: RowNoise | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.dist_params(h)
        if deterministic:
            actions = mean
        else:
            eps = torch.randn_like(mean) if noise is None else noise.normal(*mean.shape[1:]).to(mean)
            actions = mean + eps * log_std.exp()
        return actions, self._tokens(self._log_prob(actions, mean, log_std))

    def evaluate(self, h: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.dist_params(h)
        return self._tokens(self._log_prob(actions, mean, log_std)), self._tokens(0.5 + _LOG_SQRT_2PI + log_std)

    def bc_loss(self, h: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Masked MSE of the mean (well-scaled, fast) + bc_nll_weight * masked per-element NLL (fits std)."""
        mean, log_std = self.dist_params(h)
        m = _step_mask(mask, mean)
        denom = m.sum().clamp(min=1.0)
        mse = (((mean - actions) ** 2) * m).sum() / denom
        if self.bc_nll_weight == 0.0:
            return mse
        nll = -(self._log_prob(actions, mean, log_std) * m).sum() / denom
        return mse + self.bc_nll_weight * nll


class DiscreteTokenHead(nn.Module):
    """OpenVLA-style action tokens: every (chunk step, action dim) is a categorical over n_bins uniform bins
    of [-1, 1]; an action is the centre of its bin. L = K * A tokens, logp/entropy [B, K*A] in (k, a) order.

    Logits are cheap: hidden -> [K*A, token_dim] features (+ a learned per-token embedding), GELU, then one
    linear token_dim -> n_bins shared by all tokens. On top sits an ordinal prior so that training from
    scratch is fast: each token also predicts a centre mu in [-1, 1], and its logits get
    -0.5 * ((bin centre - mu) / width)^2 (width learned per token). Without it, 256 unordered classes learn
    a precise position far more slowly than a Gaussian; with it the categorical stays fully general (the
    free linear logits can reshape it) while neighbouring bins share what they learn.
    """

    def __init__(
        self, hidden_dim: int, chunk_len: int, action_dim: int, n_bins: int = 256, token_dim: int = 32,
        init_width: float = 0.3,
    ):
        super().__init__()
        self.chunk_len, self.action_dim, self.n_bins = chunk_len, action_dim, n_bins
        self.tokens_per_chunk = chunk_len * action_dim
        self.token_dim = token_dim
        self.proj = nn.Linear(hidden_dim, self.tokens_per_chunk * token_dim)
        self.token_embed = nn.Parameter(torch.randn(self.tokens_per_chunk, token_dim) * 0.02)
        self.logits_layer = nn.Linear(token_dim, n_bins)
        self.centre_layer = nn.Linear(token_dim, 1)  # ordinal prior: predicted centre per token
        self.log_width = nn.Parameter(torch.full((self.tokens_per_chunk,), math.log(init_width)))
        # bin i covers [-1 + 2i/n, -1 + 2(i+1)/n); its centre -1 + (2i+1)/n is exact in float32
        self.register_buffer("centres", (torch.arange(n_bins) * 2 + 1) / n_bins - 1.0, persistent=False)

    def actions_to_bins(self, actions: torch.Tensor) -> torch.Tensor:
        """Nearest bin centre (values outside [-1, 1] go to the end bins): long, same shape."""
        idx = torch.floor((actions + 1.0) * (self.n_bins / 2.0))
        return idx.clamp(0, self.n_bins - 1).long()

    def bins_to_actions(self, bins: torch.Tensor) -> torch.Tensor:
        return self.centres[bins]

    def logits(self, h: torch.Tensor) -> torch.Tensor:  # [B, K*A, n_bins]
        tok = F.gelu(self.proj(h).view(-1, self.tokens_per_chunk, self.token_dim) + self.token_embed)
        mu = torch.tanh(self.centre_layer(tok))  # [B, T, 1]
        width = self.log_width.clamp(min=math.log(4.0 / self.n_bins)).exp().unsqueeze(-1)  # >= 2 bins; [T, 1]
        return self.logits_layer(tok) - 0.5 * ((self.centres - mu) / width) ** 2

    def mode(self, h: torch.Tensor) -> torch.Tensor:
        return self.bins_to_actions(self.logits(h).argmax(-1)).view(-1, self.chunk_len, self.action_dim)

    def sample(self, h: torch.Tensor, deterministic: bool = False, noise: RowNoise | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        logp_all = torch.log_softmax(self.logits(h), dim=-1)
        if deterministic:
            bins = logp_all.argmax(-1)
        elif noise is not None:
            bins = sample_categorical(logp_all.exp(), noise.uniform(logp_all.shape[1]).to(logp_all))
        else:
            bins = torch.multinomial(logp_all.exp().flatten(0, 1), 1).view(logp_all.shape[:2])
        logp = logp_all.gather(-1, bins.unsqueeze(-1)).squeeze(-1)
        return self.bins_to_actions(bins).view(-1, self.chunk_len, self.action_dim), logp

    def evaluate(self, h: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logp_all = torch.log_softmax(self.logits(h), dim=-1)
        bins = self.actions_to_bins(actions).reshape(actions.shape[0], self.tokens_per_chunk)
        logp = logp_all.gather(-1, bins.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        return logp, entropy

    def bc_loss(self, h: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Masked cross-entropy against the expert's nearest bins, averaged over valid tokens."""
        logits = self.logits(h)
        bins = self.actions_to_bins(actions).reshape(actions.shape[0], self.tokens_per_chunk)
        ce = F.cross_entropy(logits.flatten(0, 1), bins.flatten(), reduction="none").view_as(bins)
        m = _step_mask(mask, actions).reshape_as(ce)
        return (ce * m).sum() / m.sum().clamp(min=1.0)


def make_head(kind: str, hidden_dim: int, chunk_len: int, action_dim: int, cfg) -> nn.Module:
    if kind == "gaussian":
        return GaussianChunkHead(
            hidden_dim, chunk_len, action_dim, cfg.init_log_std, cfg.min_log_std, cfg.max_log_std, cfg.bc_nll_weight,
            cfg.gaussian_tokens)
    if kind == "discrete":
        return DiscreteTokenHead(hidden_dim, chunk_len, action_dim, cfg.n_bins, cfg.token_dim, cfg.init_bin_width)
    raise ValueError(f"unknown head {kind!r}; valid heads: 'gaussian', 'discrete'")
