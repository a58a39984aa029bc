"""Router semantics, expert dispatch and auxiliary-loss-free balancing."""
import dataclasses

import pytest
import torch

from tristream.lm.config import LMConfig
from tristream.lm.model import LM
from tristream.lm.moe import MoE, Router

pytestmark = pytest.mark.kernels  # trains or compares float results: `make test` reruns it on other CPU kernels


def _cfg(**kw):
    return dataclasses.replace(LMConfig.preset("tiny"), **kw)


def test_router_bias_selects_but_does_not_weight():
    torch.manual_seed(0)
    cfg = _cfg(routed_scaling_factor=2.5)
    r = Router(cfg)
    torch.nn.init.normal_(r.weight, std=0.5)
    x = torch.randn(16, cfg.hidden_size)
    scores = torch.sigmoid(x @ r.weight.T)
    r.e_score_correction_bias[3] = 10.0  # expert 3 always selected
    idx, w = r(x)
    assert (idx == 3).any(1).all()
    # weights: unbiased scores of the chosen experts, normalised, times the routed scaling factor
    s = scores.gather(1, idx)
    torch.testing.assert_close(w, 2.5 * s / s.sum(1, keepdim=True))
    assert w.dtype == torch.float32
    r_un = Router(dataclasses.replace(cfg, norm_topk_prob=False))
    r_un.load_state_dict(r.state_dict())
    torch.testing.assert_close(r_un(x)[1], 2.5 * s)


def test_router_fp32_for_bf16_inputs():
    r = Router(_cfg())
    torch.nn.init.normal_(r.weight, std=0.1)
    _, w = r(torch.randn(4, 128).bfloat16())
    assert w.dtype == torch.float32


def test_group_limited_routing():
    cfg = _cfg(n_group=4, topk_group=1, num_experts_per_tok=2)
    r = Router(cfg)
    torch.nn.init.normal_(r.weight, std=0.5)
    idx, _ = r(torch.randn(32, cfg.hidden_size))
    groups = idx // 2  # 8 experts in 4 groups of 2
    assert (groups == groups[:, :1]).all()  # both experts from one group


def test_moe_matches_per_token_reference():
    torch.manual_seed(0)
    cfg = _cfg()
    moe = MoE(cfg).double()
    torch.nn.init.normal_(moe.router.weight, std=0.3)
    x = torch.randn(2, 5, cfg.hidden_size, dtype=torch.float64)
    y = moe(x)
    flat = x.reshape(-1, cfg.hidden_size)
    idx, w = moe.router(flat)
    ref = torch.stack([
        sum(w[t, j] * moe.experts[int(idx[t, j])](flat[t]) for j in range(cfg.num_experts_per_tok))
        + moe.shared_experts(flat[t]) for t in range(flat.shape[0])])
    torch.testing.assert_close(y.reshape(-1, cfg.hidden_size), ref)


def test_load_counted_only_in_training_and_reset_by_update():
    torch.manual_seed(0)
    moe = MoE(_cfg())
    x = torch.randn(10, 128)
    moe.eval()
    moe(x)
    assert moe.router.load.sum() == 0
    moe.train()
    moe(x)
    moe(x)
    assert moe.router.load.sum() == 2 * 10 * 2
    before = moe.router.load.float()
    ratio = moe.router.update_bias(0.1)
    assert ratio == pytest.approx(before.max().item() / before.mean().item())
    assert moe.router.load.sum() == 0
    # sign update: over-loaded experts go down, under-loaded up
    b = moe.router.e_score_correction_bias
    assert torch.equal(b, 0.1 * torch.sign(before.mean() - before))


def test_proportional_bias_update():
    """rule "proportional": bias += rate * (mean - load) / mean; the model passes its config's rule."""
    router = Router(_cfg())
    router.load.copy_(torch.tensor([30, 10, 20, 20, 20, 20, 20, 20]))
    ratio = router.update_bias(0.1, "proportional")
    assert ratio == pytest.approx(1.5)
    expected = 0.1 * torch.tensor([-0.5, 0.5, 0, 0, 0, 0, 0, 0])
    torch.testing.assert_close(router.e_score_correction_bias, expected)
    model = LM(_cfg(router_bias_update="proportional"))
    for r in (m.router for m in model.moe_layers()):
        r.load.copy_(torch.tensor([30, 10, 20, 20, 20, 20, 20, 20]))
    model.update_router_bias(0.1)
    for r in (m.router for m in model.moe_layers()):
        torch.testing.assert_close(r.e_score_correction_bias, expected)
    with pytest.raises(ValueError, match="router_bias_update"):
        _cfg(router_bias_update="pid")


def test_bias_stays_fp32_and_load_exact_in_a_bf16_model():
    """model.to(bfloat16) must not round the balancing state: bf16 spacing near 0.5 is 2e-3, so a 1e-3
    bias step would be lost, and bf16 counts are exact only up to 256."""
    torch.manual_seed(0)
    model = LM(_cfg()).to(torch.bfloat16).train()
    routers = [m.router for m in model.moe_layers()]
    for r in routers:
        assert r.e_score_correction_bias.dtype == torch.float32 and r.load.dtype == torch.int64
        r.e_score_correction_bias.fill_(0.5)
    model(torch.randint(0, 48, (4, 100)))  # 400 tokens x top-2 per layer: counts beyond 256
    loads = [r.load.clone() for r in routers]
    assert all(int(load.sum()) == 800 for load in loads)
    model.update_router_bias(1e-3)
    for r, load in zip(routers, loads):
        expected = 0.5 + 1e-3 * torch.sign(load.float().mean() - load.float())
        assert torch.equal(r.e_score_correction_bias, expected)  # exact fp32 arithmetic
        assert len(r.e_score_correction_bias.unique()) > 1
    kept = routers[0].e_score_correction_bias.clone()
    model.float().bfloat16()  # dtype round trips leave the bias untouched
    assert torch.equal(routers[0].e_score_correction_bias, kept)
    sd = model.state_dict()
    assert sd["layers.1.mlp.router.e_score_correction_bias"].dtype == torch.float32


def _train_and_measure_load(rate: float, steps: int = 60, window: int = 30) -> list[float]:
    """Trains the ``tiny`` LM with Adam (lr 1e-3) on counting sequences (random start and stride 1-3,
    4 x 32 tokens per step), calling update_router_bias(rate) after every step, and returns per MoE layer
    the max/mean expert load accumulated over the last ``window`` steps (~960 assignments per expert).
    One step's batch holds only 4 strongly correlated sequences (32 assignments per expert), so its own
    max/mean is mostly sampling noise; the accumulated load shows the router's real balance."""
    torch.manual_seed(0)
    model = LM(_cfg()).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    total = 0
    for step in range(steps):
        start, stride = torch.randint(0, 272, (4, 1), generator=g), torch.randint(1, 4, (4, 1), generator=g)
        tokens = (start + stride * torch.arange(32)) % 272
        loss, _ = model.loss(tokens, torch.ones_like(tokens), mtp_weight=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= steps - window:
            total = total + torch.stack([m.router.load for m in model.moe_layers()])  # [layers, E]
        model.update_router_bias(rate)
    return (total.max(1).values / total.float().mean(1)).tolist()


def test_aux_loss_free_balancing_during_training():
    """Real optimizer steps: without bias updates the routers drift out of balance; with them (rate 0.01,
    large for the short run) the accumulated load stays within 1.5 of the mean in every layer.
    Margins that rounding cannot cross (same on AVX-512, AVX2 and scalar kernels): without bias updates
    the worst layer sits near 1.93, with them near 1.16, and the summed ratio near 0.71 against 0.85."""
    without = _train_and_measure_load(0.0)
    with_bias = _train_and_measure_load(0.01)
    print(f"max/mean load per MoE layer, last 30 of 60 steps: without {without}, with {with_bias}")
    assert max(with_bias) < 1.5, with_bias
    assert max(without) > 1.5 and max(with_bias) < 0.8 * max(without), (without, with_bias)
    assert sum(with_bias) < 0.85 * sum(without), (without, with_bias)


def test_all_experts_path_equals_chosen_experts_path():
    """Small no-grad batches run every expert through stacked weights; same outputs as the routed loop."""
    torch.manual_seed(0)
    cfg = _cfg()
    moe = MoE(cfg).double().eval()
    torch.nn.init.normal_(moe.router.weight, std=0.3)
    x = torch.randn(1, 5, cfg.hidden_size, dtype=torch.float64)
    with torch.no_grad():
        assert moe._use_all_experts(5) and not moe._use_all_experts(10_000)
        fast = moe(x)
        flat_x = x.reshape(-1, cfg.hidden_size)
        idx, w = moe.router(flat_x)
        counts = torch.bincount(idx.flatten(), minlength=cfg.n_routed_experts)
        ref = moe._chosen_experts(flat_x, idx.flatten(), w, counts) + moe.shared_experts(flat_x)
    torch.testing.assert_close(fast, ref.view_as(fast), rtol=0, atol=1e-12)
    assert not moe._use_all_experts(5)  # grad enabled: always the routed loop (training)
    # the stacked copy follows weight changes (optimizer steps are in-place updates)
    with torch.no_grad():
        moe.experts[3].up_proj.weight.mul_(2.0)
        moe.experts[5].down_proj.weight.add_(0.1)
        ref = moe._chosen_experts(flat_x, idx.flatten(), w, counts) + moe.shared_experts(flat_x)
        torch.testing.assert_close(moe(x), ref.view_as(fast), rtol=0, atol=1e-12)


def test_fake_quantized_experts_keep_their_own_forward():
    from tristream.lm.quant import apply_qat
    model = apply_qat(LM(dataclasses.replace(_cfg(), vocab_size=32)).eval(), 4, 32)
    with torch.no_grad():
        assert not any(m._use_all_experts(1) for m in model.moe_layers())


@pytest.mark.parametrize("bits,group", [(4, 32), (8, 0), (8, 32)])
def test_fused_low_bit_experts_equal_the_routed_loop(bits, group):
    """Exported low-bit experts run fused (codes and scales side by side, one kernel per projection; down
    projections with per-channel scales stay separate): same outputs as each chosen expert on its own, up to
    the integer kernels' bf16 rounding."""
    from tristream.lm.quant import quantize_model
    torch.manual_seed(0)
    moe = quantize_model(MoE(_cfg()).eval(), bits, group)
    torch.nn.init.normal_(moe.router.weight, std=0.3)
    x = torch.randn(1, 3, _cfg().hidden_size)
    with torch.no_grad():
        assert moe._use_all_experts(3)
        fast = moe(x)
        flat_x = x.reshape(-1, x.shape[-1])
        idx, w = moe.router(flat_x)
        counts = torch.bincount(idx.flatten(), minlength=len(moe.experts))
        ref = moe._chosen_experts(flat_x, idx.flatten(), w, counts) + moe.shared_experts(flat_x)
    assert (fast.view_as(ref) - ref).abs().max() <= 2 ** -6 * ref.abs().max()
