"""LM forward, losses (main + MTP), parameter layout and router-bias updates."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tristream.lm.config import LMConfig
from tristream.lm.model import LM, _SkipInit, count_parameters

pytestmark = pytest.mark.kernels  # trains or compares float results: `make test` reruns it on other CPU kernels


def _model(name="tiny", **kw):
    torch.manual_seed(0)
    return LM(dataclasses.replace(LMConfig.preset(name), vocab_size=48, **kw))


def test_forward_shapes_and_causality():
    model = _model().eval()
    tokens = torch.randint(0, 48, (3, 12))
    out = model(tokens)
    assert out.logits.shape == (3, 12, 48) and out.hidden.shape == (3, 12, 128)
    torch.testing.assert_close(out.logits, model.lm_head(out.hidden))
    changed = tokens.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 48
    torch.testing.assert_close(model(changed).logits[:, :8], out.logits[:, :8])


def test_every_weight_matrix_is_a_linear():
    """QAT swaps nn.Linear modules: every matrix but the embedding and the routers must live in one."""
    model = _model()
    owners = {name: mod for name, mod in model.named_modules()}
    for name, p in model.named_parameters():
        if p.dim() < 2:
            continue
        mod_name = name.rpartition(".")[0]
        if mod_name == "embed_tokens" or mod_name.endswith("router"):
            continue
        assert isinstance(owners[mod_name], nn.Linear), name
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert n_linear > 8 * 3 * 3  # experts are separate modules, not one fused tensor


def test_layer_kinds():
    model = _model()
    kinds = [type(layer.mlp).__name__ for layer in model.layers]
    assert kinds == ["SwiGLU", "MoE", "MoE", "MoE"]
    assert type(model.mtp.block.mlp).__name__ == "SwiGLU"  # the MTP block's FFN is dense
    assert model.mtp.block.mlp.gate_proj.out_features == model.cfg.intermediate_size
    assert _model("tiny_dense").moe_layers() == []


def test_loss_masks_targets_and_adds_weighted_mtp():
    model = _model().double()
    tokens = torch.randint(0, 48, (2, 10))
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, 5:] = True  # e.g. the answer tokens
    loss, stats = model.loss(tokens, mask, mtp_weight=0.1)
    out = model(tokens)
    ce = F.cross_entropy(out.logits[:, 4:9].flatten(0, 1), tokens[:, 5:].flatten())
    mtp_logits = model.mtp_forward(out.hidden[:, :-2], tokens[:, 1:-1]).logits[:, 3:8]  # t -> t+2
    mtp_ce = F.cross_entropy(mtp_logits.flatten(0, 1), tokens[:, 5:].flatten())
    torch.testing.assert_close(loss, ce + 0.1 * mtp_ce)
    assert stats["ce"] == pytest.approx(ce.item()) and stats["mtp_ce"] == pytest.approx(mtp_ce.item())
    assert {"acc", "mtp_acc", "load_max_mean", "loss"} <= set(stats)
    loss0, stats0 = model.loss(tokens, mask.float(), mtp_weight=0.0)
    torch.testing.assert_close(loss0, ce)
    assert "mtp_ce" not in stats0


def test_gradients_reach_every_parameter():
    model = _model().train()
    tokens = torch.randint(0, 48, (4, 16))
    loss, _ = model.loss(tokens, torch.ones(4, 16), mtp_weight=0.1)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters()
               if p.grad is None and ".experts." not in n]  # an expert may get no token
    assert no_grad == []
    assert all(m.router.weight.grad.abs().sum() > 0 for m in model.moe_layers())


def test_mtp_cache_matches_full():
    model = _model().double().eval()
    tokens = torch.randint(0, 48, (2, 9))
    with torch.no_grad():
        h = model(tokens).hidden
        full = model.mtp_forward(h[:, :-1], tokens[:, 1:]).logits
        cache = model.new_cache(2, mtp=True)
        a = model.mtp_forward(h[:, :5], tokens[:, 1:6], cache).logits
        b = model.mtp_forward(h[:, 5:8], tokens[:, 6:9], cache).logits
    torch.testing.assert_close(torch.cat([a, b], 1), full)


def test_update_router_bias_uses_training_loads():
    model = _model().train()
    model(torch.randint(0, 48, (2, 8)))
    ratios = [(m.router.load.max() / m.router.load.float().mean()).item() for m in model.moe_layers()]
    stats = model.update_router_bias()
    assert stats["load_max_mean"] == pytest.approx(sum(ratios) / len(ratios))
    assert stats["load_max_mean_worst"] == pytest.approx(max(ratios))
    assert all(m.router.e_score_correction_bias.abs().sum() > 0 for m in model.moe_layers())
    assert model.update_router_bias() == {}  # counts were reset
    assert _model("tiny_dense").update_router_bias() == {}


def test_tied_embeddings():
    model = _model(tie_word_embeddings=True)
    assert model.lm_head.weight is model.embed_tokens.weight
    c = count_parameters(model)
    assert c["embedding"] == 48 * 128


def test_short_training_fits_a_pattern():
    """A few Adam steps on one repeated sequence drive both losses down (the pieces train together).
    The losses end near 0.003 x their first values, a hundred times inside the 0.3 bound on any kernels."""
    model = _model("tiny_dense").train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    tokens = torch.arange(24).remainder(7).repeat(2, 1)
    first = None
    for _ in range(30):
        loss, stats = model.loss(tokens, torch.ones_like(tokens), mtp_weight=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first or stats
    assert stats["ce"] < 0.3 * first["ce"] and stats["mtp_ce"] < 0.3 * first["mtp_ce"]


def test_last_only_logits_and_position_limit():
    model = _model().eval()
    tokens = torch.randint(0, 48, (2, 7))
    with torch.no_grad():
        full = model(tokens)
        last = model(tokens, last_only=True)
        torch.testing.assert_close(last.logits, full.logits[:, -1:])
        torch.testing.assert_close(last.hidden, full.hidden)
        mtp_full = model.mtp_forward(full.hidden, tokens)
        torch.testing.assert_close(model.mtp_forward(full.hidden, tokens, last_only=True).logits,
                                   mtp_full.logits[:, -1:])
        with pytest.raises(ValueError, match="max_position_embeddings=512"):
            model(torch.zeros(1, 513, dtype=torch.long))
        cache = model.new_cache(1)
        cache.advance(510)
        with pytest.raises(ValueError, match=r"positions \[510, 513\)"):
            model(torch.zeros(1, 3, dtype=torch.long), cache)


def test_meta_build_skips_init_in_its_own_thread_only():
    """count_parameters skips nn.init inside a thread-local torch-function mode: a module built by
    another thread at the same time is still initialised."""
    import threading

    built = {}
    started, release = threading.Event(), threading.Event()

    def other_thread():
        started.wait()
        torch.manual_seed(0)
        built["linear"] = nn.Linear(64, 64)
        release.set()

    t = threading.Thread(target=other_thread)
    t.start()
    with torch.device("meta"), _SkipInit():
        started.set()
        release.wait(10)
        assert nn.init.normal_(torch.ones(3, device="cpu")).eq(1).all()  # skipped here
    t.join()
    w = built["linear"].weight
    assert w.std() > 0.05 and w.abs().max() <= 1 / 8  # kaiming-uniform bound 1/sqrt(64)
