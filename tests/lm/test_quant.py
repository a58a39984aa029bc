import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from tristream.lm.quant import (FakeQuantLinear, QuantizedLinear, apply_qat, dequantize_groups, export_quantized,
                                fake_quantize, load_quantized, pack_int4, quantize_groups, quantize_model,
                                quantized_bytes, remove_qat, save_quantized, unpack_int4)

pytestmark = pytest.mark.kernels  # trains or compares float results: `make test` reruns it on other CPU kernels


class Tiny(nn.Module):
    """Stand-in with the LM's naming: embeddings, blocks of Linears, a router and an LM head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 16)
        self.blocks = nn.ModuleList(nn.ModuleDict({"q": nn.Linear(16, 24, bias=False), "o": nn.Linear(24, 16),
                                                   "router": nn.Linear(16, 4, bias=False)}) for _ in range(2))
        self.lm_head = nn.Linear(16, 11, bias=False)

    def forward(self, tok):
        h = self.embed(tok)
        for b in self.blocks:
            h = h + b["o"](torch.relu(b["q"](h))) + b["router"](h).sum(-1, keepdim=True)
        return self.lm_head(h)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([4, 8]), st.sampled_from([1, 2, 4, 8, 32]), st.integers(1, 5), st.integers(1, 40),
       st.integers(0, 10_000))
def test_round_to_nearest_within_half_a_step(bits, group, out_f, in_f, seed):
    w = torch.randn(out_f, in_f, generator=torch.Generator().manual_seed(seed))
    q, scale = quantize_groups(w, bits, group)
    qmax = 2 ** (bits - 1) - 1
    assert q.dtype == torch.int8 and q.abs().max() <= qmax
    assert scale.shape == (out_f, -(-in_f // group))
    w_hat = dequantize_groups(q, scale, in_f)
    step = scale.repeat_interleave(group, dim=1)[:, :in_f]
    assert torch.all((w_hat - w).abs() <= step / 2 + 1e-6)
    # the largest weight of each group is exactly representable (symmetric max scaling)
    assert torch.allclose(w_hat.abs().amax(1), w.abs().amax(1), rtol=1e-5)


def test_int4_pack_roundtrip_and_size():
    q = torch.randint(-8, 8, (3, 10), dtype=torch.int8)
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 5)
    assert torch.equal(unpack_int4(packed), q)
    with pytest.raises(ValueError, match="even"):
        pack_int4(q[:, :3])


def test_straight_through_gradient():
    w = torch.randn(4, 8, requires_grad=True)
    fake_quantize(w, 4, 4).mul(torch.arange(32.0).view(4, 8)).sum().backward()
    assert torch.equal(w.grad, torch.arange(32.0).view(4, 8))


def test_apply_qat_keeps_parameters_and_skips_head_embed_router():
    torch.manual_seed(0)
    m = Tiny()
    params = {n: p for n, p in m.named_parameters()}
    apply_qat(m, bits=4, group_size=8)
    kinds = {n: type(mod) for n, mod in m.named_modules()}
    assert kinds["blocks.0.q"] is FakeQuantLinear and kinds["blocks.1.o"] is FakeQuantLinear
    assert kinds["lm_head"] is nn.Linear and kinds["blocks.0.router"] is nn.Linear
    assert all(p is params[n] for n, p in m.named_parameters())  # optimizer state stays valid
    assert set(m.state_dict()) == set(params)
    out = m(torch.tensor([[1, 2, 3]]))
    out.sum().backward()
    assert m.blocks[0]["q"].weight.grad is not None
    remove_qat(m)
    assert type(m.blocks[0]["q"]) is nn.Linear and m.blocks[0]["q"].weight is params["blocks.0.q.weight"]


@pytest.mark.parametrize("bits", [4, 8])
def test_export_matches_fake_quant_and_roundtrips_safetensors(bits, tmp_path):
    torch.manual_seed(0)
    m = Tiny()
    tok = torch.tensor([[1, 2, 3, 4]])
    ref = m(tok)
    state = export_quantized(m, bits, group_size=8)
    assert state["blocks.0.q.qweight"].dtype == (torch.int8 if bits == 8 else torch.uint8)
    assert state["blocks.0.q.qweight"].shape == (24, 16 if bits == 8 else 8)
    assert state["lm_head.weight"].dtype == torch.float32 and "blocks.0.router.weight" in state
    fp_bytes = sum(p.numel() * 4 for p in m.parameters())
    assert quantized_bytes(state) < fp_bytes
    with torch.no_grad():
        fq = apply_qat(Tiny().requires_grad_(False), bits, 8)
        fq.load_state_dict(m.state_dict())
        fake = fq(tok)
    path = save_quantized(state, tmp_path / "w.safetensors", bits=bits, group_size=8)
    torch.manual_seed(1)
    loaded = load_quantized(Tiny(), path)
    assert isinstance(loaded.blocks[1].o, QuantizedLinear) and loaded.blocks[1].o.bias is not None
    with torch.no_grad():
        out = loaded(tok)
    assert torch.allclose(out, fake, atol=1e-5)  # the export computes what QAT trained against
    err = (out - ref).abs().max().item()
    assert 0 < err < (0.5 if bits == 4 else 0.02)


def test_quantize_model_in_place_and_load_rejects_plain_files(tmp_path):
    m = quantize_model(Tiny(), 8, 4)
    assert isinstance(m.blocks[0].q, QuantizedLinear)
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a tristream quantized export"):
        load_quantized(Tiny(), tmp_path / "plain.safetensors")


def test_int4_fast_dequant_equals_unpack_path():
    lin = nn.Linear(20, 6)
    q = QuantizedLinear.from_linear(lin, 4, 4)
    assert torch.equal(q.dequantized_weight(), dequantize_groups(unpack_int4(q.qweight), q.scales, 20))


@pytest.mark.parametrize("bits,group,out_f,in_f,kernel", [
    (8, 0, 48, 32, "int8pack"), (4, 32, 48, 64, "int4pack"), (4, 64, 32, 128, "int4pack"),
    (8, 0, 48, 24, "dequant"),  # int8pack needs in_features % 16 == 0
    (8, 16, 48, 32, "dequant"),  # grouped INT8: no integer kernel
    (4, 16, 48, 32, "dequant"),  # int4pack takes groups of 32..256
    (4, 32, 40, 64, "dequant"),  # int4pack needs out_features % 16 == 0
])
def test_integer_kernels_equal_the_dequantized_reference(bits, group, out_f, in_f, kernel):
    """The integer kernels compute with bf16 activations and scales: their outputs equal F.linear on the
    dequantized fp32 weight within 2^-6 of the output's largest magnitude; the fallback is exact."""
    torch.manual_seed(0)
    lin = nn.Linear(in_f, out_f)
    q = QuantizedLinear.from_linear(lin, bits, group)
    assert q.kernel == kernel and f"kernel={kernel}" in repr(q)
    x = torch.randn(3, 5, in_f)
    ref = torch.nn.functional.linear(x, q.dequantized_weight(), q.bias)
    out = q(x)
    assert out.shape == ref.shape and out.dtype == torch.float32
    tol = 2 ** -6 if kernel != "dequant" else 1e-6
    assert (out - ref).abs().max() <= tol * ref.abs().max()


def test_integer_kernel_follows_new_weights():
    """Kernel operands are packed once and repacked when the buffers change (load_state_dict)."""
    torch.manual_seed(0)
    a, b = nn.Linear(64, 32, bias=False), nn.Linear(64, 32, bias=False)
    qa, qb = QuantizedLinear.from_linear(a, 4, 32), QuantizedLinear.from_linear(b, 4, 32)
    x = torch.randn(2, 64)
    before = qa(x)
    qa.load_state_dict(qb.state_dict())
    torch.testing.assert_close(qa(x), qb(x), rtol=0, atol=0)
    assert not torch.equal(before, qa(x))


def test_per_channel_groups():
    """group_size 0: one scale per output row."""
    w = torch.randn(6, 40)
    q, scale = quantize_groups(w, 8, 0)
    assert q.shape == (6, 40) and scale.shape == (6, 1)
    torch.testing.assert_close(scale[:, 0], w.abs().amax(1) / 127)


def test_kernels_off_is_the_exact_reference():
    """kernels=False (what RL rollouts from low-bit weights use): fp32 activations, the dequantized result."""
    torch.manual_seed(0)
    lin = nn.Linear(64, 32, bias=False)
    q = QuantizedLinear.from_linear(lin, 4, 32, kernels=False)
    assert q.kernel == "dequant"
    x = torch.randn(2, 64)
    torch.testing.assert_close(q(x), x @ q.dequantized_weight().T, rtol=0, atol=0)
    assert all(m.kernel == "dequant" for m in quantize_model(Tiny(), 4, 8, kernels=False).modules()
               if isinstance(m, QuantizedLinear))
