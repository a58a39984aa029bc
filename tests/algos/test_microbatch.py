"""Micro-batching with the global normalisers accumulates to the full-batch loss and gradient."""
import pytest
import torch

from tristream.algos import (LOSSES, REDUCTIONS, compute_policy_loss, fiberpo_domain_precompute,
                             global_normalisers, value_loss)
from tristream.algos.fiberpo import domain_fiberpo_quantities

pytestmark = pytest.mark.kernels  # trains or compares float results: `make test` reruns it on other CPU kernels

D = torch.float64
B, L = 12, 6


def make_batch(seed=0, scale=0.15):
    g = torch.Generator().manual_seed(seed)
    old = torch.randn(B, L, generator=g, dtype=D)
    # per-domain drift so some group/domain gates leave pass-through
    logp = old + scale * torch.randn(B, L, generator=g, dtype=D) + torch.tensor([0.25] * 6 + [-0.05] * 6, dtype=D)[:, None]
    beh = old + 0.1 * torch.randn(B, L, generator=g, dtype=D)
    mask = torch.rand(B, L, generator=g) > 0.3
    mask[:, 0] = True
    mask[3] = False  # an empty row
    adv = torch.randn(B, generator=g, dtype=D)
    gid = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4])
    did = torch.tensor([0] * 6 + [1] * 6)
    return logp, old, beh, mask, adv, gid, did


def micro_splits(seed=1, n=3):
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(seed))
    return list(perm.chunk(n))  # shuffled rows: groups and domains are split across micro-batches


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_microbatch_equals_full_batch(name, reduction):
    logp0, old, beh, mask, adv, gid, did = make_batch()
    hp = {"norm_len": L}
    if name in ("ppo", "grpo", "decoupled_ppo"):
        hp["dual_clip"] = 3.0
    if name == "gspo":
        logp0 = old + 3e-4 * (logp0 - old)  # keep some sequences inside GSPO's tiny clip range
    ntok, nseq = global_normalisers(mask)

    logp = logp0.clone().requires_grad_(True)
    full, _ = compute_policy_loss(name, logp=logp, old_logp=old, advantages=adv, mask=mask,
                                  loss_reduction=reduction, behaviour_logp=beh, group_ids=gid,
                                  domain_ids=did, **hp)
    g_full, = torch.autograd.grad(full, logp)

    pre = None
    if name == "fiberpo_domain":
        pre = fiberpo_domain_precompute(logp0.detach(), old, adv, mask, gid, did,
                                        loss_reduction=reduction, norm_len=L)
    logp = logp0.clone().requires_grad_(True)
    total = 0.0
    for rows in micro_splits():
        extra = dict(hp)
        if pre is not None:
            extra["precomputed"] = pre.select(rows)
        loss, _ = compute_policy_loss(name, logp=logp[rows], old_logp=old[rows], advantages=adv[rows],
                                      mask=mask[rows], loss_reduction=reduction, behaviour_logp=beh[rows],
                                      global_tokens=ntok, global_seqs=nseq, **extra)
        loss.backward()
        total = total + loss.detach()
    torch.testing.assert_close(total, full.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(logp.grad, g_full, rtol=1e-10, atol=1e-13)
    assert g_full.abs().sum() > 0


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_domain_short_last_minibatch_matches_its_whole_batch_gradient(reduction):
    """A global step's short last mini-batch weighs each sample as a full one does: its normalisers are the
    full mini-batch's (here twice its own). The precompute must use them too, or the cross-trajectory part
    of the gradient is scaled by 1/share against the rest."""
    logp0, old, _, mask, adv, gid, did = make_batch()
    ntok, nseq = (2 * n for n in global_normalisers(mask))
    logp = logp0.clone().requires_grad_(True)
    full, _ = compute_policy_loss("fiberpo_domain", logp=logp, old_logp=old, advantages=adv, mask=mask,
                                  loss_reduction=reduction, group_ids=gid, domain_ids=did, global_tokens=ntok,
                                  global_seqs=nseq, norm_len=L)
    g_full, = torch.autograd.grad(full, logp)
    pre = fiberpo_domain_precompute(logp0, old, adv, mask, gid, did, loss_reduction=reduction, norm_len=L,
                                    num_global_tokens=ntok, num_global_seqs=nseq)
    assert (pre.cot_pos != 0).any()
    logp = logp0.clone().requires_grad_(True)
    for rows in micro_splits():
        compute_policy_loss("fiberpo_domain", logp=logp[rows], old_logp=old[rows], advantages=adv[rows],
                            mask=mask[rows], loss_reduction=reduction, global_tokens=ntok, global_seqs=nseq,
                            norm_len=L, precomputed=pre.select(rows))[0].backward()
    torch.testing.assert_close(logp.grad, g_full, rtol=1e-10, atol=1e-13)


def test_domain_batch_exercises_cross_gradient():
    """The FiberPO-Domain case above is only meaningful if the group/domain means couple trajectories:
    dropping the precomputed cotangents must change the accumulated gradient."""
    logp0, old, _, mask, adv, gid, did = make_batch()
    q = domain_fiberpo_quantities(logp0 - old, mask, gid, did)
    assert (q.regimes["domain_pos"] == 2).any()  # domain 0 drifted past its budget
    pre = fiberpo_domain_precompute(logp0, old, adv, mask, gid, did)
    assert (pre.cot_pos != 0).sum() >= 6
    pre.cot_pos.zero_()
    pre.cot_neg.zero_()
    full, _ = compute_policy_loss("fiberpo_domain", logp=(logp := logp0.clone().requires_grad_(True)),
                                  old_logp=old, advantages=adv, mask=mask,
                                  loss_reduction="seq-mean-token-mean", group_ids=gid, domain_ids=did)
    g_full, = torch.autograd.grad(full, logp)
    logp = logp0.clone().requires_grad_(True)
    _, nseq = global_normalisers(mask)
    for rows in micro_splits():
        compute_policy_loss("fiberpo_domain", logp=logp[rows], old_logp=old[rows], advantages=adv[rows],
                            mask=mask[rows], loss_reduction="seq-mean-token-mean", global_seqs=nseq,
                            precomputed=pre.select(rows))[0].backward()
    assert (logp.grad - g_full).abs().max() > 1e-4


def test_domain_microbatch_needs_normaliser_and_matching_hparams():
    logp, old, _, mask, adv, gid, did = make_batch()
    pre = fiberpo_domain_precompute(logp, old, adv, mask, gid, did)
    rows = torch.arange(4)
    with pytest.raises(ValueError, match="global normaliser"):
        compute_policy_loss("fiberpo_domain", logp=logp[rows], old_logp=old[rows], advantages=adv[rows],
                            mask=mask[rows], loss_reduction="seq-mean-token-mean", precomputed=pre.select(rows))
    with pytest.raises(ValueError, match="hyper-parameters"):
        compute_policy_loss("fiberpo_domain", logp=logp[rows], old_logp=old[rows], advantages=adv[rows],
                            mask=mask[rows], loss_reduction="seq-mean-token-mean", precomputed=pre.select(rows),
                            global_seqs=11.0, eps=0.05)


def test_value_loss_microbatch():
    g = torch.Generator().manual_seed(0)
    v0, R, old = (torch.randn(B, L, generator=g, dtype=D) for _ in range(3))
    mask = torch.rand(B, L, generator=g) > 0.3
    n = float(mask.sum())
    v = v0.clone().requires_grad_(True)
    full, _ = value_loss(v, R, old, clip=0.2, mask=mask)
    g_full, = torch.autograd.grad(full, v)
    v = v0.clone().requires_grad_(True)
    for rows in micro_splits():
        value_loss(v[rows], R[rows], old[rows], clip=0.2, mask=mask[rows], num_global=n)[0].backward()
    torch.testing.assert_close(v.grad, g_full)
