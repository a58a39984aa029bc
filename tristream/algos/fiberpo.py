"""FiberPO and FiberPO-Domain (Li et al., "Fibration Policy Optimization", arXiv 2603.08239).

Implemented from ``specs/fiberpo.md`` (the paper ships no code). Shapes: ``log_ratio, logp, old_logp,
mask``: ``[B, L]``, one row per trajectory tau, ``T_tau = sum_t mask[tau, t]`` valid tokens;
``advantages``: ``[B, L]`` or ``[B]``; ``group_ids, domain_ids``: ``[B]`` integers.

Per valid token i of trajectory tau, with ``x_i = log r_i = logp_i - old_logp_i`` and sign
``l_i = +1 if x_i >= 0 else -1``::

    log s+_tau = (1/T_tau) sum_t max(x_t, 0)            log s-_tau = (1/T_tau) sum_t max(-x_t, 0)
    g(x, C, T) = x                          if |x| <= C                    (pass-through)
               = sign(x) (T+1) C - T x      if C < |x| < (1 + 1/T) C       (rollback, slope -T)
               = 0                          otherwise                      (zeroed)
    log w_tau  = g(log s+_tau, C+, T_tau) - g(log s-_tau, C-, T_tau)                      (base weight)
    u_i = l_i x_i - log s^(l_i)_tau         v_i = -log s^(-l_i)_tau
    log rt_i   = clip(l_i u_i, -eps, eps) - clip(l_i v_i, -eps, eps)                     (fiber gate)
    G_i        = exp(log w_tau + log rt_i)
    loss       = -(1/|Tj|) sum_tau (1/T_tau) sum_i G_i A_i        (= seq-mean-token-mean of -G A)

Gradients flow through the aggregates s+ and s- (the rollback gradient); there is no min(), no dual
clip and no KL term. Token sign convention: ``l = +1`` at ``x = 0`` and ``max(x, 0)`` has slope 1 at 0,
so autograd reproduces Prop. 5.2 exactly, including at ``r = 1``.

Defaults (tristream's choice, NOT the paper's - the paper gives no tuned values; these sit inside the
ranges its illustrations use): ``eps = 0.03``, ``C+ = 0.15``, ``C- = 0.08`` (delta = C+ + C- = 0.23,
C- < C+). FiberPO-Domain uses the same values at every level unless a (domain, group, trajectory)
triple is given.

Micro-batching. Plain FiberPO is row-local: split rows into micro-batches and pass the global
normalisers (``num_global_seqs`` etc.). FiberPO-Domain's group/domain aggregates need every
trajectory of the group/domain: call :func:`fiberpo_domain_precompute` once on the whole mini-batch
with the *current* policy's log-probs (a no-grad forward at the current parameters; on the first
mini-batch of an on-policy update these equal the proximal log-probs), then pass
``precomputed.select(rows)`` to each micro-batch's :func:`fiberpo_domain_loss`. The precomputed object
carries the full-batch aggregate values and the full-batch cotangents of the loss w.r.t. each
trajectory's aggregates, so the accumulated micro-batch gradients equal the full-batch gradient exactly
(including the cross-trajectory gradient through group/domain means). With data parallelism, the
precompute must see the whole mini-batch (gather the log-probs) - not done here.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch

from .ppo import _adv, ratio_diagnostics
from .reductions import masked_mean, reduce_loss

__all__ = [
    "DEFAULT_EPS", "DEFAULT_C_POS", "DEFAULT_C_NEG",
    "aggregate_gate", "gate_regime", "gate_slope", "trajectory_aggregates",
    "FiberQuantities", "fiberpo_quantities", "gated_ratio", "fiberpo_loss",
    "DomainAggregates", "DomainQuantities", "domain_aggregates", "domain_fiberpo_quantities",
    "domain_gated_ratio", "DomainPrecomputed", "fiberpo_domain_precompute", "fiberpo_domain_loss",
]

DEFAULT_EPS = 0.03
DEFAULT_C_POS = 0.15
DEFAULT_C_NEG = 0.08

PASS, ROLLBACK, ZEROED = 0, 1, 2
REGIME_NAMES = ("pass", "rollback", "zeroed")


# ----------------------------------------------------------------------------- the gate g(x, C, T)

def aggregate_gate(x: torch.Tensor, c: float | torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """The continuous piecewise-linear gate ``g(x, C, T)`` (see module doc); ``t`` may be a tensor
    broadcastable to ``x`` (e.g. ``T_tau`` per trajectory). Slope 1 / -T / 0 in the three zones;
    continuous at ``|x| = C`` (value ``sign(x) C``) and at ``|x| = (1 + 1/T) C`` (value 0)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    c = torch.as_tensor(c, dtype=x.dtype, device=x.device)
    ax = x.abs()
    sign = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
    rollback = sign * (t + 1) * c - t * x
    out = torch.where(ax < (1 + 1 / t) * c, rollback, torch.zeros_like(x))
    return torch.where(ax <= c, x, out)


def gate_regime(x: torch.Tensor, c: float | torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Zone of ``g(x, C, T)``: 0 = pass-through, 1 = rollback, 2 = zeroed (long tensor, shape of x)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    ax = x.detach().abs()
    reg = torch.where(ax < (1 + 1 / t) * c, torch.full_like(ax, ROLLBACK), torch.full_like(ax, ZEROED))
    return torch.where(ax <= c, torch.full_like(ax, PASS), reg).long()


def gate_slope(x: torch.Tensor, c: float | torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """``g'(x, C, T)``: 1 (pass-through), -T (rollback), 0 (zeroed) - the gamma of Prop. 5.2."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand_as(x)
    reg = gate_regime(x, c, t)
    return torch.where(reg == PASS, torch.ones_like(x), torch.where(reg == ROLLBACK, -t, torch.zeros_like(x)))


# ----------------------------------------------------------------------------- FiberPO

def trajectory_aggregates(log_ratio: torch.Tensor, mask: torch.Tensor):
    """``(x, sign, log_s_pos [B], log_s_neg [B], T [B])`` with ``x = log_ratio`` zeroed at masked
    entries, ``sign`` = l (+1 at x = 0), the sign-split means and the valid-token counts (min 1)."""
    m = mask.bool()
    x = torch.where(m, log_ratio, torch.zeros_like(log_ratio))
    n_tok = m.sum(-1).clamp(min=1).to(log_ratio.dtype)
    pos = torch.where(x >= 0, x, torch.zeros_like(x))  # max(x, 0) with slope 1 at 0 (l = +1 there)
    neg = torch.where(x < 0, -x, torch.zeros_like(x))
    sign = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
    return x, sign, pos.sum(-1) / n_tok, neg.sum(-1) / n_tok, n_tok


def _fiber(x, sign, log_s_pos, log_s_neg, eps):
    """Fiber gate: ``(log_rt, u, v)`` all [B, L] given per-trajectory aggregates [B]."""
    own = torch.where(sign > 0, log_s_pos.unsqueeze(-1), log_s_neg.unsqueeze(-1))
    other = torch.where(sign > 0, log_s_neg.unsqueeze(-1), log_s_pos.unsqueeze(-1))
    u = sign * x - own
    v = -other
    log_rt = (sign * u).clamp(-eps, eps) - (sign * v).clamp(-eps, eps)
    return log_rt, u, v


@dataclass
class FiberQuantities:
    """Per-token and per-trajectory FiberPO quantities (masked entries of [B, L] fields are arbitrary).

    G, log_rt, u, v, sign: [B, L]; log_w, log_s_pos, log_s_neg, n_tokens, regime_pos, regime_neg: [B].
    regime_*: 0 pass-through, 1 rollback, 2 zeroed (the base gate's zone for that sign channel)."""
    G: torch.Tensor
    log_w: torch.Tensor
    log_rt: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    sign: torch.Tensor
    log_s_pos: torch.Tensor
    log_s_neg: torch.Tensor
    n_tokens: torch.Tensor
    regime_pos: torch.Tensor
    regime_neg: torch.Tensor


def fiberpo_quantities(
    log_ratio: torch.Tensor,
    mask: torch.Tensor,
    c_pos: float = DEFAULT_C_POS,
    c_neg: float = DEFAULT_C_NEG,
    eps: float = DEFAULT_EPS,
) -> FiberQuantities:
    """All FiberPO quantities for ``log_ratio [B, L]`` (differentiable; see module doc for formulas)."""
    x, sign, s_pos, s_neg, n_tok = trajectory_aggregates(log_ratio, mask)
    log_w = aggregate_gate(s_pos, c_pos, n_tok) - aggregate_gate(s_neg, c_neg, n_tok)
    log_rt, u, v = _fiber(x, sign, s_pos, s_neg, eps)
    G = torch.exp(log_w.unsqueeze(-1) + log_rt)
    return FiberQuantities(G, log_w, log_rt, u, v, sign, s_pos, s_neg, n_tok,
                           gate_regime(s_pos, c_pos, n_tok), gate_regime(s_neg, c_neg, n_tok))


def gated_ratio(
    log_ratio: torch.Tensor,
    mask: torch.Tensor,
    c_pos: float = DEFAULT_C_POS,
    c_neg: float = DEFAULT_C_NEG,
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """FiberPO gated ratio ``G [B, L] = exp(log w_tau + log rt_i)``; rows are trajectories, masked entries
    arbitrary (finite). Gradients flow through the aggregates."""
    return fiberpo_quantities(log_ratio, mask, c_pos, c_neg, eps).G


def _regime_diag(prefix: str, regime: torch.Tensor, valid: torch.Tensor, dtype) -> dict[str, torch.Tensor]:
    return {f"{prefix}{name}_frac": masked_mean((regime == k).to(dtype), valid)
            for k, name in enumerate(REGIME_NAMES)}


def _fiber_diagnostics(log_ratio, mask, G, u, v, regimes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    m = mask.bool()
    diag = ratio_diagnostics(log_ratio, mask)
    diag["gated_ratio_mean"] = masked_mean(G.detach(), m)
    diag["u_abs_mean"] = masked_mean(u.detach().abs(), m)
    valid = m.any(-1)
    for prefix, reg in regimes.items():
        diag.update(_regime_diag(prefix, reg, valid, G.dtype))
    return diag


def fiberpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    c_pos: float = DEFAULT_C_POS,
    c_neg: float = DEFAULT_C_NEG,
    eps: float = DEFAULT_EPS,
    loss_reduction: str = "seq-mean-token-mean",
    *,
    num_global_tokens: float | None = None,
    num_global_seqs: float | None = None,
    norm_len: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """FiberPO loss ``reduce(-G A)``; the paper's 1/(|Tj| T_tau) weighting is ``seq-mean-token-mean``.

    Diagnostics: ratio_mean (raw r), approx_kl, gated_ratio_mean (G), token_clip_frac (|u| > eps),
    v_clip_frac (|v| > eps), u_abs_mean, and the share of trajectories in each base-gate zone:
    ``traj_{pass,rollback,zeroed}_frac`` combined over the two channels (a trajectory's zone is the
    more restrictive of its two channels: max of the zone indices), and per channel
    ``pos_*_frac`` / ``neg_*_frac``.
    """
    log_ratio = logp - old_logp.detach()
    q = fiberpo_quantities(log_ratio, mask, c_pos, c_neg, eps)
    adv = _adv(advantages, logp)
    loss = reduce_loss(-q.G * adv, mask, loss_reduction, num_global_tokens=num_global_tokens,
                       num_global_seqs=num_global_seqs, norm_len=norm_len)
    regimes = {"traj_": torch.maximum(q.regime_pos, q.regime_neg), "pos_": q.regime_pos, "neg_": q.regime_neg}
    diag = _fiber_diagnostics(log_ratio, mask, q.G, q.u, q.v, regimes)
    diag["token_clip_frac"] = masked_mean((q.u.detach().abs() > eps).to(logp.dtype), mask)
    diag["v_clip_frac"] = masked_mean((q.v.detach().abs() > eps).to(logp.dtype), mask)
    return loss, diag


# ----------------------------------------------------------------------------- FiberPO-Domain

def _levels(c: float | Sequence[float]) -> tuple[float, float, float]:
    """A float, or a (domain, group, trajectory) triple of budgets."""
    if isinstance(c, (int, float)):
        return (float(c),) * 3
    c = tuple(float(v) for v in c)
    if len(c) != 3:
        raise ValueError(f"per-level budget must be a float or a (domain, group, trajectory) triple, got {c}")
    return c  # type: ignore[return-value]


@dataclass
class DomainAggregates:
    """Per-row (trajectory) views of the group and domain aggregates, all [B]:
    ``g_pos, g_neg`` = log s+-_g of the row's group, ``g_tokens`` = T_g; same for the domain (``d_*``)."""
    g_pos: torch.Tensor
    g_neg: torch.Tensor
    g_tokens: torch.Tensor
    d_pos: torch.Tensor
    d_neg: torch.Tensor
    d_tokens: torch.Tensor


def _group_mean(values: torch.Tensor, inv: torch.Tensor, n: int) -> torch.Tensor:
    count = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, inv, torch.ones_like(values))
    return torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, inv, values) / count


def domain_aggregates(
    log_s_pos: torch.Tensor,
    log_s_neg: torch.Tensor,
    n_tokens: torch.Tensor,
    group_ids: torch.Tensor,
    domain_ids: torch.Tensor,
) -> DomainAggregates:
    """Group/domain aggregates from per-trajectory ones (all [B]): ``log s_g = mean over the group's
    trajectories of log s_tau`` (unweighted), ``T_g = sum of the group's T_tau``; the same per domain.
    Differentiable. Must see every trajectory of each group/domain (the whole mini-batch)."""
    out = []
    for ids in (group_ids, domain_ids):
        _, inv = torch.unique(ids, return_inverse=True)
        n = int(inv.max().item()) + 1
        tokens = torch.zeros(n, dtype=n_tokens.dtype, device=n_tokens.device).index_add(0, inv, n_tokens)
        out += [_group_mean(log_s_pos, inv, n)[inv], _group_mean(log_s_neg, inv, n)[inv], tokens[inv]]
    return DomainAggregates(*out)


@dataclass
class DomainQuantities:
    """FiberPO-Domain per-token quantities (as FiberQuantities) plus per-level zones, each [B] long:
    ``regimes[f"{level}_{channel}"]`` for level in (domain, group, traj), channel in (pos, neg)."""
    G: torch.Tensor
    log_w: torch.Tensor
    log_rt: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    sign: torch.Tensor
    log_s_pos: torch.Tensor
    log_s_neg: torch.Tensor
    n_tokens: torch.Tensor
    aggregates: DomainAggregates
    regimes: dict


def _domain_core(x, sign, s_pos, s_neg, n_tok, agg: DomainAggregates, c_pos, c_neg, eps) -> DomainQuantities:
    cp, cn = _levels(c_pos), _levels(c_neg)
    log_w = torch.zeros_like(s_pos)
    regimes = {}
    for ch, s_tau, g_s, d_s, c, sgn in (("pos", s_pos, agg.g_pos, agg.d_pos, cp, 1.0),
                                        ("neg", s_neg, agg.g_neg, agg.d_neg, cn, -1.0)):
        levels = (("domain", d_s, c[0], agg.d_tokens),
                  ("group", g_s - d_s, c[1], agg.g_tokens),
                  ("traj", s_tau - g_s, c[2], n_tok))
        for name, arg, c_lvl, t_lvl in levels:
            log_w = log_w + sgn * aggregate_gate(arg, c_lvl, t_lvl)
            regimes[f"{name}_{ch}"] = gate_regime(arg, c_lvl, t_lvl)
    log_rt, u, v = _fiber(x, sign, s_pos, s_neg, eps)
    G = torch.exp(log_w.unsqueeze(-1) + log_rt)
    return DomainQuantities(G, log_w, log_rt, u, v, sign, s_pos, s_neg, n_tok, agg, regimes)


def domain_fiberpo_quantities(
    log_ratio: torch.Tensor,
    mask: torch.Tensor,
    group_ids: torch.Tensor,
    domain_ids: torch.Tensor,
    c_pos: float | Sequence[float] = DEFAULT_C_POS,
    c_neg: float | Sequence[float] = DEFAULT_C_NEG,
    eps: float = DEFAULT_EPS,
    aggregates: DomainAggregates | None = None,
) -> DomainQuantities:
    """All FiberPO-Domain quantities. Per trajectory tau in group g of domain D, per channel::

        log w = sum_l sgn_l [ g(log s^l_D, C^l_D, T_D) + g(log s^l_g - log s^l_D, C^l_g, T_g)
                              + g(log s^l_tau - log s^l_g, C^l_tau, T_tau) ],   sgn_+ = 1, sgn_- = -1

    and the fiber term of FiberPO. ``aggregates`` (rows aligned with this batch): use these group/domain
    values instead of computing them from this batch (micro-batching); ``None`` computes them here,
    differentiably. When every level passes through this equals FiberPO (the sum telescopes)."""
    x, sign, s_pos, s_neg, n_tok = trajectory_aggregates(log_ratio, mask)
    if aggregates is None:
        aggregates = domain_aggregates(s_pos, s_neg, n_tok, group_ids, domain_ids)
    return _domain_core(x, sign, s_pos, s_neg, n_tok, aggregates, c_pos, c_neg, eps)


def domain_gated_ratio(
    log_ratio: torch.Tensor,
    mask: torch.Tensor,
    group_ids: torch.Tensor,
    domain_ids: torch.Tensor,
    c_pos: float | Sequence[float] = DEFAULT_C_POS,
    c_neg: float | Sequence[float] = DEFAULT_C_NEG,
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """FiberPO-Domain gated ratio ``G [B, L]`` over a whole mini-batch (aggregates computed here, with
    gradient). ``c_pos``/``c_neg``: a float, or a (domain, group, trajectory) triple."""
    return domain_fiberpo_quantities(log_ratio, mask, group_ids, domain_ids, c_pos, c_neg, eps).G


@dataclass
class DomainPrecomputed:
    """Full-mini-batch inputs for the micro-batched FiberPO-Domain loss, all per row [B] (detached):
    the group/domain aggregate values (``aggregates``) and ``cot_pos``/``cot_neg`` = d loss / d log s+-_tau
    through the group/domain means only (the cross-trajectory part of the gradient). Also records the
    hyper-parameters it was computed with; ``select(rows)`` takes a micro-batch's rows."""
    aggregates: DomainAggregates
    cot_pos: torch.Tensor
    cot_neg: torch.Tensor
    c_pos: tuple
    c_neg: tuple
    eps: float
    loss_reduction: str

    def select(self, rows) -> "DomainPrecomputed":
        agg = DomainAggregates(**{f.name: getattr(self.aggregates, f.name)[rows] for f in fields(DomainAggregates)})
        return replace(self, aggregates=agg, cot_pos=self.cot_pos[rows], cot_neg=self.cot_neg[rows])


def fiberpo_domain_precompute(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    group_ids: torch.Tensor,
    domain_ids: torch.Tensor,
    c_pos: float | Sequence[float] = DEFAULT_C_POS,
    c_neg: float | Sequence[float] = DEFAULT_C_NEG,
    eps: float = DEFAULT_EPS,
    loss_reduction: str = "seq-mean-token-mean",
    norm_len: float | None = None,
    *,
    num_global_tokens: float | None = None,
    num_global_seqs: float | None = None,
) -> DomainPrecomputed:
    """Run once on the WHOLE mini-batch before micro-batching. ``logp`` = the current policy's log-probs
    (values only; no gradient needed). Computes the group/domain aggregates and the cotangent of the
    full-batch loss w.r.t. each trajectory's aggregates through the group/domain means::

        cot^l_tau = sum_{level in (g, D)} (d loss / d log s^l_level) / n_level       (n = trajectories)

    so that the micro-batch loss ``loss_m(detached aggregates) + sum_tau cot^l_tau (log s^l_tau - sg[.])``
    accumulates to the exact full-batch gradient. ``num_global_tokens`` / ``num_global_seqs``: the normalisers
    the micro-batches use (None: this mini-batch's own); a short last mini-batch weighed as a full one must
    pass the full one's, or its cross-trajectory gradient is scaled up against the rest."""
    with torch.enable_grad():
        x, sign, s_pos, s_neg, n_tok = trajectory_aggregates((logp - old_logp).detach(), mask)
        agg = domain_aggregates(s_pos, s_neg, n_tok, group_ids, domain_ids)
        leaves = {k: getattr(agg, k).clone().requires_grad_(True) for k in ("g_pos", "g_neg", "d_pos", "d_neg")}
        agg_leaf = replace(agg, **leaves)
        q = _domain_core(x, sign, s_pos, s_neg, n_tok, agg_leaf, c_pos, c_neg, eps)
        loss = reduce_loss(-q.G * _adv(advantages, q.G), mask, loss_reduction, num_global_tokens=num_global_tokens,
                           num_global_seqs=num_global_seqs, norm_len=norm_len)
        grads = torch.autograd.grad(loss, list(leaves.values()))
    g = dict(zip(leaves, grads))
    cot = {}
    for ch in ("pos", "neg"):
        total = torch.zeros_like(s_pos)
        for lvl, ids in (("g", group_ids), ("d", domain_ids)):
            _, inv = torch.unique(ids, return_inverse=True)
            n = int(inv.max().item()) + 1
            summed = torch.zeros(n, dtype=s_pos.dtype, device=s_pos.device).index_add(0, inv, g[f"{lvl}_{ch}"])
            count = torch.zeros_like(summed).index_add(0, inv, torch.ones_like(s_pos))
            total = total + (summed / count)[inv]  # d loss/d log s_level, times d log s_level/d log s_tau
        cot[ch] = total.detach()
    agg = DomainAggregates(**{f.name: getattr(agg, f.name).detach() for f in fields(DomainAggregates)})
    return DomainPrecomputed(agg, cot["pos"], cot["neg"], _levels(c_pos), _levels(c_neg), float(eps), loss_reduction)


def fiberpo_domain_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    group_ids: torch.Tensor | None = None,
    domain_ids: torch.Tensor | None = None,
    c_pos: float | Sequence[float] = DEFAULT_C_POS,
    c_neg: float | Sequence[float] = DEFAULT_C_NEG,
    eps: float = DEFAULT_EPS,
    loss_reduction: str = "seq-mean-token-mean",
    *,
    precomputed: DomainPrecomputed | None = None,
    num_global_tokens: float | None = None,
    num_global_seqs: float | None = None,
    norm_len: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """FiberPO-Domain loss ``reduce(-G A)`` (paper weighting = seq-mean-token-mean).

    Whole mini-batch: pass ``group_ids`` and ``domain_ids`` (``domain_ids=None`` = one domain).
    Micro-batch: pass ``precomputed=fiberpo_domain_precompute(<whole mini-batch>).select(rows)`` and the
    global normalisers; ids are then not needed. Diagnostics: as ``fiberpo_loss``, with the zone shares
    per level, combined over channels: ``{domain,group,traj}_{pass,rollback,zeroed}_frac`` (share of
    trajectories; combined = the more restrictive channel).
    """
    log_ratio = logp - old_logp.detach()
    if precomputed is None:
        if group_ids is None:
            raise ValueError("fiberpo_domain_loss needs group_ids (or precomputed aggregates)")
        if domain_ids is None:
            domain_ids = torch.zeros_like(group_ids)
        q = domain_fiberpo_quantities(log_ratio, mask, group_ids, domain_ids, c_pos, c_neg, eps)
        extra = 0.0
    else:
        if (precomputed.c_pos, precomputed.c_neg, precomputed.eps, precomputed.loss_reduction) != (
                _levels(c_pos), _levels(c_neg), float(eps), loss_reduction):
            raise ValueError("precomputed FiberPO-Domain aggregates were made with other hyper-parameters")
        needed = num_global_tokens if loss_reduction == "token-mean" else num_global_seqs
        if needed is None:
            raise ValueError("micro-batched fiberpo_domain_loss needs the global normaliser "
                             "(num_global_tokens for token-mean, num_global_seqs otherwise)")
        x, sign, s_pos, s_neg, n_tok = trajectory_aggregates(log_ratio, mask)
        q = _domain_core(x, sign, s_pos, s_neg, n_tok, precomputed.aggregates, c_pos, c_neg, eps)
        # the cross-trajectory gradient through the group/domain means, from the full-batch cotangents
        extra = (precomputed.cot_pos * (s_pos - s_pos.detach()) + precomputed.cot_neg * (s_neg - s_neg.detach())).sum()
    adv = _adv(advantages, logp)
    loss = reduce_loss(-q.G * adv, mask, loss_reduction, num_global_tokens=num_global_tokens,
                       num_global_seqs=num_global_seqs, norm_len=norm_len) + extra
    regimes = {f"{lvl}_": torch.maximum(q.regimes[f"{lvl}_pos"], q.regimes[f"{lvl}_neg"])
               for lvl in ("domain", "group", "traj")}
    diag = _fiber_diagnostics(log_ratio, mask, q.G, q.u, q.v, regimes)
    diag["token_clip_frac"] = masked_mean((q.u.detach().abs() > eps).to(logp.dtype), mask)
    diag["v_clip_frac"] = masked_mean((q.v.detach().abs() > eps).to(logp.dtype), mask)
    return loss, diag
