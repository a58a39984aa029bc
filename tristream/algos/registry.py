"""Policy-loss registry: each loss declares what it needs, so the learner calls any of them the same way.

A loss is a pure function ``fn(logp, old_logp, *, advantages, mask, loss_reduction, num_global_tokens,
num_global_seqs, **inputs, **hparams) -> (loss, diagnostics)`` over ``[R, T]`` rows (docs/algorithms.md).
Its :class:`LossSpec` says which extra per-row inputs it reads, its default reduction, which of the
config's hyper-parameters it takes, whether the proximal log-probs are recomputed on fresh data too, and
whether it needs a whole-mini-batch aggregate before micro-batching. Adding a loss is one function and
one :func:`register_loss` call (docs/extending.md); the learner never looks at a loss's name.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch

from .fiberpo import fiberpo_domain_loss, fiberpo_domain_precompute, fiberpo_loss
from .grpo import grpo_loss
from .gspo import gspo_loss
from .ppo import decoupled_ppo_loss, value_loss

__all__ = ["LossSpec", "LOSSES", "register_loss", "get_loss", "loss_spec", "compute_policy_loss", "value_loss"]

LossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
INPUTS = ("behaviour_logp", "group_ids", "domain_ids")  # what a loss may ask for beyond logp/old/adv/mask


@dataclass(frozen=True)
class LossSpec:
    """What a policy loss needs from the learner.

    fn: the loss (see the module docstring).
    reduction: its natural ``loss_reduction``, used when ``algo.loss_reduction`` is null.
    hparams: ``algo config -> keyword hyper-parameters`` of ``fn`` (e.g. ``clip_eps``).
    inputs: extra per-row tensors it reads, from :data:`INPUTS`: ``behaviour_logp`` ``[R, T]`` (the policy
        that acted; the importance weight of decoupled PPO), ``group_ids`` / ``domain_ids`` ``[R]``.
    proximal: ``"when_stale"``: the proximal (trust-region) log-probs are the behaviour ones unless the data
        come from an older policy version; ``"always"``: recomputed from the current policy every time.
    precompute: ``(logp, old_logp, advantages, mask, **inputs, loss_reduction, num_global_tokens,
        num_global_seqs, **hparams) -> aggregate``, a no-grad pass over the whole mini-batch whose result's
        ``select(rows)`` is passed to ``fn`` as ``precomputed=`` (group / domain statistics that micro-batches
        alone cannot see).
    fine_tokens: the loss bounds each token's ratio (a per-token trust region), so a Gaussian action head
        defaults to one token per action dimension under it (``train.rl_gaussian_tokens`` null): a whole
        chunk's log-prob moves ~dims times as far as one dimension's, and would leave the token radius at once.
    per_token: each token's loss term reads that token's inputs alone (no sequence-level ratio, no row
        statistic), so under ``token-mean`` the loss does not depend on how tokens are grouped into rows: the
        learner then lays every sample out as a row of its own (no padding to segments) and
        ``algo.shuffle=samples`` may draw single samples.
    """

    fn: LossFn
    reduction: str
    hparams: Callable[[Any], dict] = lambda algo: {}
    inputs: tuple[str, ...] = ()
    proximal: Literal["when_stale", "always"] = "when_stale"
    precompute: Callable | None = None
    fine_tokens: bool = False
    per_token: bool = False

    def __post_init__(self):
        unknown = set(self.inputs) - set(INPUTS)
        if unknown:
            raise ValueError(f"unknown loss inputs {sorted(unknown)}; valid: {', '.join(INPUTS)}")

    def __call__(self, logp, old_logp, advantages, mask, available: dict, **kwargs):
        """``fn`` with the inputs it declares taken from ``available`` (name -> tensor) and ``kwargs``
        (reduction, normalisers, hyper-parameters) passed through."""
        return self.fn(logp, old_logp, advantages=advantages, mask=mask,
                       **{k: available[k] for k in self.inputs}, **kwargs)


def _clip(algo) -> dict:
    return {"clip_eps": algo.clip_eps, "dual_clip": algo.dual_clip, "clip_eps_high": algo.clip_eps_high}


def _fiberpo(algo) -> dict:
    return {"c_pos": algo.fiberpo_c_pos, "c_neg": algo.fiberpo_c_neg, "eps": algo.fiberpo_eps}


LOSSES: dict[str, LossSpec] = {
    # PPO reads the behaviour log-probs so that stale data get the decoupled importance weight; on fresh
    # data behaviour == proximal and the weight is exactly 1 (plain clipped PPO).
    "ppo": LossSpec(decoupled_ppo_loss, "token-mean", _clip, inputs=("behaviour_logp",), per_token=True),
    "decoupled_ppo": LossSpec(decoupled_ppo_loss, "token-mean", _clip, inputs=("behaviour_logp",),
                              proximal="always", per_token=True),
    "grpo": LossSpec(grpo_loss, "seq-mean-token-mean", _clip, per_token=True),
    "gspo": LossSpec(gspo_loss, "seq-mean-token-mean",
                     lambda a: {"clip_eps_low": a.gspo_clip_low, "clip_eps_high": a.gspo_clip_high}),
    "fiberpo": LossSpec(fiberpo_loss, "seq-mean-token-mean", _fiberpo, fine_tokens=True),
    "fiberpo_domain": LossSpec(fiberpo_domain_loss, "seq-mean-token-mean", _fiberpo,
                               inputs=("group_ids", "domain_ids"), precompute=fiberpo_domain_precompute,
                               fine_tokens=True),
}


def register_loss(name: str, spec: LossSpec) -> None:
    """Make ``spec`` available as ``algo.loss=name`` (before the config is loaded)."""
    if not isinstance(spec, LossSpec):
        raise TypeError(f"register_loss({name!r}, ...) needs a LossSpec, got {type(spec).__name__}")
    LOSSES[name] = spec


def loss_spec(name: str) -> LossSpec:
    """The spec registered as ``name``, or the :class:`LossSpec` object at the import path ``"pkg.mod:NAME"``
    (registered under that path on first use); ValueError naming what would be valid otherwise."""
    if name not in LOSSES and ":" in name:
        module, _, attr = name.partition(":")
        try:
            spec = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"policy loss {name!r}: cannot import it ({e})") from None
        if not isinstance(spec, LossSpec):
            raise ValueError(f"policy loss {name!r} is a {type(spec).__name__}, not a tristream.algos.LossSpec")
        register_loss(name, spec)
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown policy loss {name!r}; valid: {', '.join(sorted(LOSSES))}, or an import path "
                         f"'pkg.module:SPEC' to a LossSpec") from None


def get_loss(name: str) -> LossFn:
    """The loss function registered as ``name``."""
    return loss_spec(name).fn


def compute_policy_loss(
    name: str,
    *,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    loss_reduction: str,
    behaviour_logp: torch.Tensor | None = None,
    group_ids: torch.Tensor | None = None,
    domain_ids: torch.Tensor | None = None,
    global_tokens: float | None = None,
    global_seqs: float | None = None,
    **hparams: Any,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Call policy loss ``name`` with the inputs its spec declares. ``old_logp`` [R, T]: the proximal
    log-probs. ``behaviour_logp`` [R, T] (None: behaviour == proximal), ``group_ids`` / ``domain_ids`` [R]:
    passed only to a loss that declares them. ``global_tokens`` / ``global_seqs``: the mini-batch's
    normalisers when this is one micro-batch. ``hparams`` go to the loss (e.g. ``clip_eps``,
    ``precomputed``, ``norm_len``); an unknown one raises TypeError."""
    available = {"behaviour_logp": old_logp if behaviour_logp is None else behaviour_logp,
                 "group_ids": group_ids, "domain_ids": domain_ids}
    return loss_spec(name)(logp, old_logp, advantages, mask, available, loss_reduction=loss_reduction,
                           num_global_tokens=global_tokens, num_global_seqs=global_seqs, **hparams)
