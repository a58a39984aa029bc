"""FiberPO property tests (specs/fiberpo.md, "Properties an implementation must show")."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd.functional import jacobian

from tristream.algos.fiberpo import (PASS, ROLLBACK, ZEROED, aggregate_gate, domain_fiberpo_quantities,
                                     domain_gated_ratio, fiberpo_domain_loss, fiberpo_loss,
                                     fiberpo_quantities, gate_slope, gated_ratio)
from tristream.algos.reductions import reduce_loss

D = torch.float64
CP, CN, EPS = 0.15, 0.08, 0.03


def jac_formula(log_ratio, mask, c_pos=CP, c_neg=CN, eps=EPS):
    """Prop. 5.2: dG_i/dr_j for i, j valid tokens of the same trajectory; 0 elsewhere. [B, L, B, L]."""
    q = fiberpo_quantities(log_ratio, mask, c_pos, c_neg, eps)
    B, L = log_ratio.shape
    r = log_ratio.exp()
    gam_pos = gate_slope(q.log_s_pos, c_pos, q.n_tokens)
    gam_neg = gate_slope(q.log_s_neg, c_neg, q.n_tokens)
    J = torch.zeros(B, L, B, L, dtype=log_ratio.dtype)
    for b in range(B):
        T = q.n_tokens[b]
        for i in range(L):
            for j in range(L):
                if not (mask[b, i] and mask[b, j]):
                    continue
                li, lj = q.sign[b, i], q.sign[b, j]
                in_u = float(q.u[b, i].abs() <= eps)
                in_v = float(q.v[b, i].abs() <= eps)
                gamma = gam_pos[b] if lj > 0 else gam_neg[b]
                term = in_u * float(i == j) + (gamma - in_u * float(li == lj) - in_v * float(li != lj)) / T
                J[b, i, b, j] = q.G[b, i] / r[b, j] * term
    return J


def jac_autograd(log_ratio, mask, **kw):
    return jacobian(lambda r: gated_ratio(r.log(), mask, **kw), log_ratio.exp())


def jac_fd(log_ratio, mask, h=1e-6, **kw):
    r0 = log_ratio.exp()
    B, L = r0.shape
    J = torch.zeros(B, L, B, L, dtype=D)
    for b in range(B):
        for j in range(L):
            e = torch.zeros_like(r0)
            e[b, j] = h
            J[:, :, b, j] = (gated_ratio((r0 + e).log(), mask, **kw) - gated_ratio((r0 - e).log(), mask, **kw)) / (2 * h)
    return J


def valid_pairs(J, mask):
    m = mask.bool()
    return J * (m[:, :, None, None] & m[None, None, :, :])


# rows chosen to land in each regime (T = 4 unless masked); no value sits on a kink
ROWS = {
    "pass":          [0.01, -0.02, 0.015, 0.005, 0.0],
    "rollback_pos":  [0.17, 0.16, 0.18, 0.17, 0.0],
    "rollback_neg":  [-0.09, -0.085, -0.095, -0.09, 0.0],
    "zeroed_both":   [0.5, 0.6, -0.5, -0.4, 0.0],
    "zeroed_flat":   [0.3, 0.31, 0.29, 0.3, 0.0],
    "token_clip_u":  [0.12, 0.001, 0.01, -0.06, 0.0],
    "token_clip_v":  [0.02, -0.15, 0.01, 0.002, 0.0],
    "short_T3":      [0.01, -0.01, 0.02, 0.0, 0.0],
}


def regime_batch():
    x = torch.tensor(list(ROWS.values()), dtype=D)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[:, 4] = False
    mask[-1, 3] = False
    x[:, 4] = 0.7  # masked garbage
    return x, mask


def test_regime_batch_hits_every_regime():
    x, mask = regime_batch()
    q = fiberpo_quantities(x, mask, CP, CN, EPS)
    names = list(ROWS)
    assert q.regime_pos[names.index("pass")] == PASS and q.regime_neg[names.index("pass")] == PASS
    assert q.regime_pos[names.index("rollback_pos")] == ROLLBACK
    assert q.regime_neg[names.index("rollback_neg")] == ROLLBACK
    zb = names.index("zeroed_both")
    assert q.regime_pos[zb] == ZEROED and q.regime_neg[zb] == ZEROED
    assert q.regime_pos[names.index("zeroed_flat")] == ZEROED
    tu = names.index("token_clip_u")
    assert (q.u[tu, :4].abs() > EPS).any() and q.regime_pos[tu] == PASS
    tv = names.index("token_clip_v")
    assert (q.v[tv, :4].abs() > EPS).any() and q.regime_neg[tv] == PASS


def test_jacobian_matches_prop_5_2_autograd_and_fd():
    x, mask = regime_batch()
    Jf = jac_formula(x, mask)
    Ja = jac_autograd(x, mask)
    Jd = jac_fd(x, mask)
    torch.testing.assert_close(valid_pairs(Ja, mask), Jf, rtol=0, atol=1e-10)
    torch.testing.assert_close(valid_pairs(Jd, mask), Jf, rtol=0, atol=1e-6)
    # masked inputs influence nothing
    assert torch.all(Ja[..., ~mask] == 0)


def test_jacobian_block_diagonal():
    x, mask = regime_batch()
    Ja = jac_autograd(x, mask)
    B = x.shape[0]
    for b in range(B):
        for b2 in range(B):
            if b != b2:
                assert torch.all(Ja[b, :, b2, :] == 0)


def test_near_on_policy_is_importance_sampling():
    torch.manual_seed(0)
    B, L = 6, 7
    old = torch.randn(B, L, dtype=D)
    logp = (old + 0.004 * torch.randn(B, L, dtype=D)).requires_grad_(True)
    mask = torch.rand(B, L) > 0.25
    mask[:, 0] = True
    q = fiberpo_quantities(logp - old, mask, CP, CN, EPS)
    assert (q.u.abs() <= EPS).all() and (q.v.abs() <= EPS).all()
    assert (q.regime_pos == PASS).all() and (q.regime_neg == PASS).all()
    r = (logp - old).exp()
    torch.testing.assert_close(q.G[mask], r[mask], rtol=1e-13, atol=0)
    adv = torch.randn(B, dtype=D)
    loss, diag = fiberpo_loss(logp, old, adv, mask)
    g_fib, = torch.autograd.grad(loss, logp)
    is_loss = reduce_loss(-r * adv[:, None], mask, "seq-mean-token-mean")
    g_is, = torch.autograd.grad(is_loss, logp)
    torch.testing.assert_close(loss, is_loss, rtol=1e-13, atol=0)
    torch.testing.assert_close(g_fib, g_is, rtol=1e-12, atol=1e-15)
    assert diag["token_clip_frac"].item() == 0 and diag["traj_pass_frac"].item() == 1


def test_identity_at_r_equal_one():
    B, L = 3, 4
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    x = torch.zeros(B, L, dtype=D)
    assert torch.all(gated_ratio(x, mask) == 1)
    Ja = jac_autograd(x, mask)
    eye = torch.eye(B * L, dtype=D).reshape(B, L, B, L)
    torch.testing.assert_close(valid_pairs(Ja, mask), valid_pairs(eye, mask), rtol=0, atol=1e-15)


def test_property_5_zeroed_and_token_clipped():
    x, mask = regime_batch()
    q = fiberpo_quantities(x, mask, CP, CN, EPS)
    zb = list(ROWS).index("zeroed_both")
    assert q.log_w[zb] == 0  # w = 1
    Ja = jac_autograd(x, mask)
    # zeroed trajectory: gamma = 0, so no trajectory-level gradient; every token here is also fiber-clipped
    assert (q.u[zb, :4].abs() > EPS).all() and (q.v[zb, :4].abs() > EPS).all()
    assert torch.all(Ja[zb, :4, zb, :4] == 0)
    # a token with |u| > eps gets no gradient through its own ratio: dG_i/dr_i has no [i=j] term
    tu = list(ROWS).index("token_clip_u")
    i = int(torch.nonzero(q.u[tu, :4].abs() > EPS)[0])
    j = [k for k in range(4) if k != i and q.sign[tu, k] == q.sign[tu, i]][0]
    T = q.n_tokens[tu]
    r = x.exp()
    li_gamma = 1.0  # pass-through
    expected = q.G[tu, i] / r[tu, i] * (li_gamma - 0.0 - 0.0) / T
    torch.testing.assert_close(Ja[tu, i, tu, i], expected)
    torch.testing.assert_close(Ja[tu, i, tu, j] * r[tu, j], Ja[tu, i, tu, i] * r[tu, i])


def test_gate_continuity_and_values():
    C, T = 0.15, 4.0
    for edge in (C, (1 + 1 / T) * C):
        for s in (1.0, -1.0):
            x = torch.tensor([s * edge - s * 1e-12, s * edge, s * edge + s * 1e-12], dtype=D)
            g = aggregate_gate(x, C, T)
            assert (g.max() - g.min()).abs() < 1e-10
    assert aggregate_gate(torch.tensor(C, dtype=D), C, T) == C
    assert aggregate_gate(torch.tensor(-(1 + 1 / T) * C, dtype=D), C, T).abs() < 1e-15
    assert aggregate_gate(torch.tensor(0.17, dtype=D), C, T).item() == pytest.approx(5 * C - 4 * 0.17)
    assert aggregate_gate(torch.tensor(0.3, dtype=D), C, T) == 0
    # T per trajectory
    g = aggregate_gate(torch.tensor([0.16, 0.16], dtype=D), C, torch.tensor([1.0, 100.0], dtype=D))
    torch.testing.assert_close(g, torch.tensor([2 * C - 0.16, 0.0], dtype=D))


@settings(max_examples=60, deadline=None)
@given(x=st.floats(-1, 1), h=st.floats(-1e-3, 1e-3), c=st.floats(0.01, 0.5), t=st.integers(1, 300))
def test_gate_lipschitz(x, h, c, t):
    a = aggregate_gate(torch.tensor(x, dtype=D), c, float(t))
    b = aggregate_gate(torch.tensor(x + h, dtype=D), c, float(t))
    assert abs(float(a - b)) <= max(1, t) * abs(h) + 1e-12
    assert abs(float(a)) <= c + 1e-12


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 4), L=st.integers(1, 6), scale=st.sampled_from([0.01, 0.05, 0.15, 0.4]),
       seed=st.integers(0, 10_000))
def test_jacobian_property_random(B, L, scale, seed):
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(B, L, generator=g, dtype=D)
    mask = torch.rand(B, L, generator=g) > 0.3
    Jf = jac_formula(x, mask)
    Ja = jac_autograd(x, mask)
    torch.testing.assert_close(valid_pairs(Ja, mask), Jf, rtol=0, atol=1e-10)
    assert torch.all(Ja[..., ~mask] == 0)
    off = torch.ones(B, B, dtype=torch.bool) & ~torch.eye(B, dtype=torch.bool)
    assert torch.all(Ja.permute(0, 2, 1, 3)[off] == 0)
    assert torch.isfinite(gated_ratio(x, mask)).all()


# ---------------------------------------------------------------- FiberPO-Domain

def domain_batch(scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, L = 8, 5
    x = scale * torch.randn(B, L, generator=g, dtype=D)
    mask = torch.rand(B, L, generator=g) > 0.2
    mask[:, 0] = True
    gid = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    did = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    return x, mask, gid, did


def test_domain_equals_fiberpo_when_all_pass():
    x, mask, gid, did = domain_batch(0.01)
    qd = domain_fiberpo_quantities(x, mask, gid, did, CP, CN, EPS)
    assert all((reg == PASS).all() for reg in qd.regimes.values())
    torch.testing.assert_close(qd.G, gated_ratio(x, mask, CP, CN, EPS), rtol=1e-13, atol=0)
    old = torch.zeros_like(x)
    adv = torch.randn(x.shape[0], dtype=D)
    logp = x.clone().requires_grad_(True)
    l1, _ = fiberpo_loss(logp, old, adv, mask)
    g1, = torch.autograd.grad(l1, logp)
    l2, diag = fiberpo_domain_loss(logp, old, adv, mask, gid, did)
    g2, = torch.autograd.grad(l2, logp)
    torch.testing.assert_close(l1, l2, rtol=1e-13, atol=0)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-14)
    assert diag["domain_pass_frac"].item() == 1 and diag["group_pass_frac"].item() == 1


def test_domain_gradient_flows_within_domain_only():
    x, mask, gid, did = domain_batch(0.2, seed=1)
    kw = dict(c_pos=(0.1, 0.15, 0.15), c_neg=(0.05, 0.08, 0.08), eps=EPS)
    qd = domain_fiberpo_quantities(x, mask, gid, did, **kw)
    assert any((reg != PASS).any() for k, reg in qd.regimes.items() if not k.startswith("traj"))
    Ja = jacobian(lambda r: domain_gated_ratio(r.log(), mask, gid, did, **kw), x.exp())
    Jd = torch.zeros_like(Ja)
    r0, h = x.exp(), 1e-6
    for b in range(x.shape[0]):
        for j in range(x.shape[1]):
            e = torch.zeros_like(r0)
            e[b, j] = h
            Jd[:, :, b, j] = (domain_gated_ratio((r0 + e).log(), mask, gid, did, **kw)
                              - domain_gated_ratio((r0 - e).log(), mask, gid, did, **kw)) / (2 * h)
    torch.testing.assert_close(Ja, Jd, rtol=0, atol=1e-6)
    for b in range(8):
        for b2 in range(8):
            if did[b] != did[b2]:
                assert torch.all(Ja[b, :, b2, :] == 0)
    assert Ja[0, :, 2, :].abs().sum() > 0  # same domain, other group: coupled through the domain mean
