"""Advantage estimators: GAE (with a value head) and GRPO group-normalised outcome advantages.

Pure functions of tensors. Time-major layout: ``[T, N]`` = (time step, parallel env).
"""
from __future__ import annotations

import torch

__all__ = ["gae", "grpo_advantages"]


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    last_value: torch.Tensor,
    *,
    truncation_values: torch.Tensor | None = None,
    gamma: float = 0.99,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation with bootstrapping on truncation.

    Shapes (time-major): ``rewards, values, terminated, truncated, truncation_values``: ``[T, N]``;
    ``last_value``: ``[N]``.

    - ``values[t]``   = V(s_t), the value of the observation the action at step t was taken from.
    - ``rewards[t]``  = reward of step t.
    - ``terminated[t]`` / ``truncated[t]`` = the episode ended *after* step t (Gymnasium convention:
      terminated = a true terminal state, truncated = a time limit or other cut).
    - ``last_value``  = V(s_T), the value of the observation after the last step of the rollout (when
      step T-1 ended an episode this is the reset observation's value and is not used).
    - ``truncation_values[t]`` = V(final observation of the episode) where ``truncated[t]``
      (arbitrary elsewhere). Required if any step is truncated and not terminated.

    The value of the next state used at step t is::

        V'_t = 0                       if terminated[t]
             = truncation_values[t]    elif truncated[t]           (bootstrap on truncation)
             = values[t + 1]           elif t < T - 1
             = last_value              otherwise

    and with ``done_t = terminated[t] or truncated[t]``::

        delta_t = r_t + gamma * V'_t - V(s_t)
        A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1}        (A_T = 0)
        R_t     = A_t + V(s_t)                                          (the value target)

    The GAE trace is cut at every episode boundary; a truncation contributes its bootstrap value
    through ``delta_t`` only. Returns ``(advantages [T, N], returns [T, N])``, no gradient.
    """
    if rewards.dim() != 2:
        raise ValueError(f"gae expects time-major [T, N] tensors, got rewards of shape {tuple(rewards.shape)}")
    rewards = rewards.detach()
    values = values.detach().to(rewards.dtype)
    terminated = terminated.bool()
    truncated = truncated.bool() & ~terminated
    if truncated.any():
        if truncation_values is None:
            raise ValueError("some steps are truncated: pass truncation_values (V of the final observation)")
        trunc_v = truncation_values.detach().to(rewards.dtype)
    else:
        trunc_v = torch.zeros_like(rewards)
    next_values = torch.cat([values[1:], last_value.detach().to(rewards.dtype).reshape(1, -1)], dim=0)
    next_values = torch.where(truncated, trunc_v, next_values)
    next_values = torch.where(terminated, torch.zeros_like(next_values), next_values)
    not_done = (~(terminated | truncated)).to(rewards.dtype)

    deltas = rewards + gamma * next_values - values
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = deltas[t] + gamma * lam * not_done[t] * running
        advantages[t] = running
    return advantages, advantages + values


def grpo_advantages(
    returns: torch.Tensor,
    group_ids: torch.Tensor,
    eps: float = 1e-6,
    normalize_std: bool = True,
) -> torch.Tensor:
    """Group-normalised outcome advantages (GRPO).

    ``returns``: ``[M]`` one scalar outcome per rollout; ``group_ids``: ``[M]`` integer ids, a group
    being the rollouts from the same task and initial state. For rollout i in group g::

        A_i = (R_i - mean_g(R)) / (std_g(R) + eps)      if normalize_std   (GRPO)
            = R_i - mean_g(R)                           otherwise          (Dr. GRPO)

    ``std_g`` is the unbiased (Bessel-corrected) standard deviation, as in the GRPO reference code.
    A group of size 1, or whose returns are all equal, gets advantage 0. Returns ``[M]``, no gradient.
    Broadcast to tokens by the caller (``A[:, None]``).
    """
    returns = returns.detach()
    if not returns.is_floating_point():
        returns = returns.to(torch.get_default_dtype())
    _, inv = torch.unique(group_ids, return_inverse=True)
    n_groups = int(inv.max().item()) + 1 if inv.numel() else 0
    count = torch.zeros(n_groups, dtype=returns.dtype, device=returns.device).index_add_(
        0, inv, torch.ones_like(returns))
    total = torch.zeros_like(count).index_add_(0, inv, returns)
    mean = (total / count)[inv]
    centred = returns - mean
    sq = torch.zeros_like(count).index_add_(0, inv, centred * centred)
    std = (sq / (count - 1).clamp(min=1)).sqrt()[inv]
    gmax = torch.full_like(count, -float("inf")).scatter_reduce_(0, inv, returns, "amax")[inv]
    gmin = torch.full_like(count, float("inf")).scatter_reduce_(0, inv, returns, "amin")[inv]
    degenerate = (count[inv] < 2) | (gmax == gmin)
    adv = centred / (std + eps) if normalize_std else centred
    return torch.where(degenerate, torch.zeros_like(adv), adv)
