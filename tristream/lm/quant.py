"""Weight quantization: INT8 / INT4 fake-quantization for QAT, and export of real low-bit weights.

Scheme (both paths share :func:`quantize_groups`, so a QAT model and its export round identically):
symmetric round-to-nearest with one fp32 scale per group of ``group_size`` consecutive weights along the
input dimension of a Linear weight W [out, in]::

    scale = max|W_group| / qmax          qmax = 2^(bits-1) - 1  (127 for INT8, 7 for INT4)
    q     = clamp(round(W / scale), -qmax, qmax)      W_hat = q * scale

(the grid is symmetric, so INT4 uses 15 of its 16 codes). ``in`` is zero-padded to a multiple of
``group_size`` when needed; padded columns quantize to 0 and are cut off again.

QAT (:func:`apply_qat`) swaps every quantized ``nn.Linear`` for :class:`FakeQuantLinear`, an ``nn.Linear``
whose forward uses W_hat with a straight-through estimator (the gradient reaches the fp32 master weight
as if rounding were the identity). Its state dict is the plain Linear's, so a QAT checkpoint loads into a
plain model.

``group_size`` 0 means one group per output row (per-channel scales), the usual INT8 weight-only scheme.

Export (:func:`export_quantized`) produces real low-bit tensors: INT8 as int8 [out, in_p], INT4 as two
codes per uint8 [out, in_p / 2] (code = q + 8 in 1..15; low nibble = even column), plus fp32 scales
[out, in_p / group_size]. :func:`save_quantized` / :func:`load_quantized` write and read them with
safetensors. :class:`QuantizedLinear` holds them and multiplies with PyTorch's weight-only integer kernels
where one applies (``QuantizedLinear.kernel``; no fp32 copy of the weight is kept):

    int8pack   INT8 per-channel, in_features % 16 == 0, on CPU: ``aten._weight_int8pack_mm`` (bf16
               activations, int8 weights)
    int4pack   INT4 with group_size 32/64/128/256, out_features % 16 == 0, on CPU:
               ``aten._weight_int4pack_mm_for_cpu`` (bf16 activations; weights repacked once at first use)
    dequant    anything else (grouped INT8, other devices or shapes, or ``kernels=False``): dequantize,
               then F.linear

The integer kernels take bf16 activations and scales (as W8A16 / W4A16 deployments do), so their output
equals the dequantized fp32 reference up to bf16 rounding (relative error below 2^-6 of the output's
largest magnitude; tests/lm/test_quant.py states it).

What is quantized: every ``nn.Linear`` inside the decoder blocks and the MTP block (attention projections,
expert / shared-expert / dense FFNs, the MTP input projection). Kept in full precision: the token
embedding and the LM head (a lookup table and the vocabulary projection, sensitive and small at low width,
as in common INT4 releases), and the MoE router (routing decisions flip on small score changes; the spec
computes router scores in fp32). ``skip`` changes that choice.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

BITS = (4, 8)


def default_skip(name: str) -> bool:
    """True for modules kept in full precision: the LM head, embeddings and the MoE router. A name part
    equal to 'gate' is the router (DeepSeek naming); 'gate_proj' (SwiGLU) is quantized."""
    parts = name.split(".")
    return any(p in ("lm_head", "router", "gate") or p.startswith("embed") for p in parts)


def _qmax(bits: int) -> int:
    if bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits}")
    return 2 ** (bits - 1) - 1


def _grouped(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """W [out, in] -> [out, G, group_size], zero-padded along in (group_size 0: one group per row)."""
    if group_size < 0:
        raise ValueError(f"group_size must be >= 1, or 0 for one group per output row, got {group_size}")
    out_f, in_f = w.shape
    group_size = group_size or in_f
    pad = (-in_f) % group_size
    if pad:
        w = F.pad(w, (0, pad))
    return w.reshape(out_f, -1, group_size)


def quantize_groups(w: torch.Tensor, bits: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes q [out, in_p] (int8, values in [-qmax, qmax]) and scales [out, G] (fp32) of W [out, in]."""
    qmax = _qmax(bits)
    g = _grouped(w.detach().float(), group_size)
    scale = g.abs().amax(dim=-1).clamp_min(1e-12) / qmax  # an all-zero group keeps scale tiny, q = 0
    q = torch.clamp(torch.round(g / scale[..., None]), -qmax, qmax).to(torch.int8)
    return q.reshape(w.shape[0], -1), scale


def dequantize_groups(q: torch.Tensor, scale: torch.Tensor, in_features: int) -> torch.Tensor:
    """W_hat [out, in] (fp32) from codes q [out, in_p] and scales [out, G]."""
    out_f = q.shape[0]
    w = q.float().reshape(out_f, scale.shape[1], -1) * scale[..., None]
    return w.reshape(out_f, -1)[:, :in_features]


def fake_quantize(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """W_hat with a straight-through gradient: forward = dequantize(quantize(W)), d W_hat / d W = I."""
    q, scale = quantize_groups(w, bits, group_size)
    w_hat = dequantize_groups(q, scale, w.shape[1]).to(w.dtype)
    return w + (w_hat - w).detach()


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int8 codes in [-8, 7], [out, in_p] with in_p even -> uint8 [out, in_p / 2], low nibble = even column."""
    if q.shape[-1] % 2:
        raise ValueError(f"INT4 packing needs an even number of columns, got {q.shape[-1]}")
    u = (q.to(torch.int16) + 8).to(torch.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [out, n] -> int8 codes [out, 2n] (inverse of :func:`pack_int4`)."""
    lo = (packed & 0xF).to(torch.int8) - 8
    hi = (packed >> 4).to(torch.int8) - 8
    return torch.stack((lo, hi), dim=-1).reshape(packed.shape[0], -1)


# byte -> its two codes as floats (low nibble first): one gather decodes a packed row
_INT4_LUT = torch.stack((torch.arange(256) % 16, torch.arange(256) // 16), dim=-1).float() - 8.0  # [256, 2]


class FakeQuantLinear(nn.Linear):
    """An nn.Linear that trains through fake-quantized weights (QAT). Same parameters as nn.Linear."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, bits: int = 4,
                 group_size: int = 32, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        _qmax(bits)
        self.bits, self.group_size = bits, group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [..., in] -> [..., out]
        return F.linear(x, fake_quantize(self.weight, self.bits, self.group_size), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}, group_size={self.group_size}"


INT4PACK_GROUPS = (32, 64, 128, 256)  # the group sizes aten's CPU int4 kernel accepts


class QuantizedLinear(nn.Module):
    """Inference Linear on real low-bit weights: buffers ``qweight`` (int8 [out, in_p] or packed uint8
    [out, in_p / 2]), ``scales`` fp32 [out, G] and an optional fp32 ``bias``. The forward runs the integer
    kernel named by :attr:`kernel` (module docstring); kernel layouts are derived from the buffers at first
    use and again whenever they change (load_state_dict, .to())."""

    def __init__(self, in_features: int, out_features: int, bits: int, group_size: int, bias: bool = False,
                 kernels: bool = True):
        super().__init__()
        _qmax(bits)
        self.in_features, self.out_features, self.bits, self.group_size = in_features, out_features, bits, group_size
        self.use_kernels = kernels  # False: always dequantize (fp32 activations, the exact reference)
        group = group_size or in_features
        in_p = in_features + (-in_features) % group
        if bits == 4 and in_p % 2:
            raise ValueError(f"INT4 needs an even padded width; use an even group_size (got {group_size})")
        cols = in_p if bits == 8 else in_p // 2
        self.register_buffer("qweight", torch.zeros(out_features, cols, dtype=torch.int8 if bits == 8 else torch.uint8))
        self.register_buffer("scales", torch.ones(out_features, in_p // group))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._packed: tuple | None = None  # (key, kernel operands) for the integer kernels

    @classmethod
    def from_linear(cls, lin: nn.Linear, bits: int, group_size: int, kernels: bool = True) -> "QuantizedLinear":
        m = cls(lin.in_features, lin.out_features, bits, group_size, bias=lin.bias is not None, kernels=kernels)
        q, scale = quantize_groups(lin.weight, bits, group_size)
        m.qweight.copy_(q if bits == 8 else pack_int4(q))
        m.scales.copy_(scale)
        if lin.bias is not None:
            m.bias.copy_(lin.bias.detach().float())
        return m.to(lin.weight.device)

    @property
    def kernel(self) -> str:
        """'int8pack', 'int4pack' or 'dequant': what :meth:`forward` multiplies with (module docstring)."""
        if not self.use_kernels or self.qweight.device.type != "cpu":
            return "dequant"
        if self.bits == 8 and self.scales.shape[1] == 1 and self.qweight.shape[1] == self.in_features \
                and self.in_features % 16 == 0:  # (the kernel reads out of bounds for other widths)
            return "int8pack"
        if (self.bits == 4 and self.group_size in INT4PACK_GROUPS and self.in_features % self.group_size == 0
                and self.out_features % 16 == 0):
            return "int4pack"
        return "dequant"

    def codes(self) -> torch.Tensor:
        """The integer codes as int8 [out, in_p]."""
        return self.qweight if self.bits == 8 else unpack_int4(self.qweight)

    def dequantized_weight(self) -> torch.Tensor:
        if self.bits == 8:
            return dequantize_groups(self.qweight, self.scales, self.in_features)
        # INT4: one table lookup per byte instead of unpack + convert (fewer ops per decode step)
        codes = _INT4_LUT.to(self.scales.device)[self.qweight.long()]  # [out, in_p / 2, 2]
        w = codes.reshape(self.out_features, self.scales.shape[1], -1) * self.scales[..., None]
        return w.reshape(self.out_features, -1)[:, :self.in_features]

    def _operands(self) -> tuple:
        """(kernel, weight operands), rebuilt when a buffer was written or moved (checked every call: a few
        attribute reads, against the kernel's ~5 us)."""
        qweight, scales = self._buffers["qweight"], self._buffers["scales"]
        key = (qweight.data_ptr(), qweight._version, scales.data_ptr(), scales._version)
        if self._packed is None or self._packed[0] != key:
            kernel = self.kernel
            with torch.inference_mode(False), torch.no_grad():
                if kernel == "int8pack":
                    ops = (qweight, scales[:, 0].to(torch.bfloat16).contiguous())
                elif kernel == "int4pack":  # codes + 8 in 0..15 as int32 [out, in], repacked into the kernel's tiles
                    w = torch.ops.aten._convert_weight_to_int4pack_for_cpu(self.codes().to(torch.int32) + 8, 1)
                    zeros = torch.zeros_like(scales)  # symmetric grid: (code + 8 - 8) * scale + 0
                    ops = (w, torch.stack((scales, zeros), dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16))
                else:
                    ops = ()
            self._packed = (key, (kernel, *ops))
        return self._packed[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [..., in] -> [..., out]
        kernel, *ops = self._operands()
        bias = self._buffers["bias"]
        if kernel == "dequant":
            return F.linear(x, self.dequantized_weight().to(x.dtype), bias)
        x2 = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if kernel == "int8pack":
            y = torch.ops.aten._weight_int8pack_mm(x2, *ops)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, ops[0], self.group_size, ops[1])
        y = y.to(x.dtype).view(*x.shape[:-1], self.out_features)
        return y if bias is None else y + bias

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, kernel={self.kernel}")


def kernels_used(model: nn.Module) -> dict[str, int]:
    """How many QuantizedLinear modules of ``model`` run each kernel, e.g. {'int4pack': 30, 'dequant': 2}."""
    counts: dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, QuantizedLinear):
            counts[m.kernel] = counts.get(m.kernel, 0) + 1
    return counts


def quantizable_linears(model: nn.Module, skip: Callable[[str], bool] = default_skip
                        ) -> Iterator[tuple[str, nn.Linear]]:
    """(name, module) of every nn.Linear that quantization applies to (not QuantizedLinear, not skipped)."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and not skip(name):
            yield name, mod


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def apply_qat(model: nn.Module, bits: int, group_size: int = 32,
              skip: Callable[[str], bool] = default_skip) -> nn.Module:
    """Swap (in place) every quantizable nn.Linear for a FakeQuantLinear sharing its parameters; returns
    ``model``. Parameter objects are kept, so an optimizer built before or after the swap works."""
    _qmax(bits)
    for name, lin in list(quantizable_linears(model, skip)):
        if isinstance(lin, FakeQuantLinear):
            lin.bits, lin.group_size = bits, group_size
            continue
        fq = FakeQuantLinear(lin.in_features, lin.out_features, bias=lin.bias is not None, bits=bits,
                             group_size=group_size, device="meta")
        fq.weight, fq.bias = lin.weight, lin.bias
        _swap(model, name, fq)
    return model


def remove_qat(model: nn.Module) -> nn.Module:
    """Swap FakeQuantLinear modules back to plain nn.Linear (same parameters), in place."""
    for name, mod in list(model.named_modules()):
        if isinstance(mod, FakeQuantLinear):
            lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None, device="meta")
            lin.weight, lin.bias = mod.weight, mod.bias
            _swap(model, name, lin)
    return model


def quantize_model(model: nn.Module, bits: int, group_size: int = 32,
                   skip: Callable[[str], bool] = default_skip, kernels: bool = True) -> nn.Module:
    """Replace (in place) every quantizable Linear (plain or FakeQuant) by a QuantizedLinear; returns model.
    ``kernels=False``: never the integer kernels (fp32 activations: outputs equal the dequantized weights')."""
    for name, lin in list(quantizable_linears(model, skip)):
        _swap(model, name, QuantizedLinear.from_linear(lin, bits, group_size, kernels))
    return model


def export_quantized(model: nn.Module, bits: int, group_size: int = 32,
                     skip: Callable[[str], bool] = default_skip) -> dict[str, torch.Tensor]:
    """The model's weights with real low-bit tensors: for each quantized Linear ``<name>.qweight`` and
    ``<name>.scales`` (and ``<name>.bias``), every other tensor of the state dict unchanged. The model is
    not modified."""
    quant = dict(quantizable_linears(model, skip))
    out: dict[str, torch.Tensor] = {}
    for key, t in model.state_dict().items():
        mod_name, _, leaf = key.rpartition(".")
        if mod_name in quant and leaf == "weight":
            q, scale = quantize_groups(t, bits, group_size)
            out[f"{mod_name}.qweight"] = q if bits == 8 else pack_int4(q)
            out[f"{mod_name}.scales"] = scale
        else:
            out[key] = t.detach().clone()
    return out


def quantized_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def save_quantized(state: dict[str, torch.Tensor], path: str | Path, *, bits: int, group_size: int,
                   extra: dict | None = None) -> Path:
    """Write ``state`` (from :func:`export_quantized`) to ``path`` (.safetensors) with the scheme in metadata."""
    from safetensors.torch import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "tristream-int", "bits": str(bits), "group_size": str(group_size),
            "extra": json.dumps(extra or {})}
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=meta)
    return path


def load_quantized(model: nn.Module, path: str | Path, skip: Callable[[str], bool] = default_skip) -> nn.Module:
    """Load exported low-bit weights into ``model`` (a freshly built fp32 model of the same config): its
    quantizable Linears become QuantizedLinear modules, then the state loads strictly. Returns ``model``."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != "tristream-int":
        raise ValueError(f"{path} is not a tristream quantized export (metadata {meta})")
    bits, group_size = int(meta["bits"]), int(meta["group_size"])
    quantize_model(model, bits, group_size, skip)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model
