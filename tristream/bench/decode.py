"""``tristream bench decode``: tokens/s of plain greedy decoding vs MTP self-speculative decoding (draft
k = 1..4), with fp32 weights and with real INT8 / INT4 exported weights, side by side in one run, at each
batch size; then one Linear layer's time per kernel (fp32, int8pack, int4pack).

Protocol (docs/benchmarks.md, applied to decoding): every variant decodes the same held-out prompts of the
checkpoint's task (greedy, up to the answer width + EOS), one warm-up pass per variant first, then
``repeats`` measured passes with the variants interleaved (A B C ... A B C ...) so machine drift cancels.
Throughput = generated tokens (up to and including EOS) / wall seconds of the pass; medians over repeats
and the ratio of medians to plain fp32 decoding. Checked, not assumed: speculative output equals plain
output of the same weights token for token (greedy), and INT8 / INT4 outputs are compared with fp32
(agreement) and graded by the task's checker (exact match). Acceptance: mean tokens a row emits per
main-model verification round (accepted drafts + 1, the report's "acceptance length"; the first token, from
the prompt's forward, is in no round) and accepted / drafted tokens.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from tristream.provenance import run_meta
from tristream.lm.generate import generate
from tristream.lm.quant import QuantizedLinear, kernels_used, quantize_model
from tristream.lm.train import TOKENIZER, heldout, load_lm, task_of


def _prompts(problems, batch_size: int) -> list[torch.Tensor]:
    ids = [TOKENIZER.encode(p.prompt, bos=True) for p in problems]
    return [TOKENIZER.batch(ids[i:i + batch_size]) for i in range(0, len(ids), batch_size)]


def _generated(row: torch.Tensor) -> list[int]:
    """New tokens of one row up to and including the first EOS."""
    out = []
    for t in row.tolist():
        out.append(t)
        if t == TOKENIZER.EOS:
            break
    return out


def decode_pass(model, prompts: list[torch.Tensor], max_new: int, draft_k: int) -> dict[str, Any]:
    """Decode every prompt batch once; returns tokens, seconds and acceptance counts."""
    outputs: list[list[int]] = []
    rounds = emitted = accepted = drafted = main_fw = mtp_fw = 0
    t0 = time.perf_counter()
    for prompt in prompts:
        out, stats = generate(model, prompt, max_new, temperature=0.0, draft_k=draft_k, eos_id=TOKENIZER.EOS)
        outputs += [_generated(r[prompt.shape[1]:]) for r in out]
        rounds += stats.get("rounds", 0)
        emitted += sum(stats.get("accept_lengths", []))
        accepted += int(stats.get("accepted", 0))
        main_fw += stats["main_forwards"]
        mtp_fw += stats["mtp_forwards"]
        drafted += int(stats.get("drafted", 0))
    seconds = time.perf_counter() - t0
    return {"outputs": outputs, "seconds": seconds, "tokens": sum(len(o) for o in outputs),
            "rounds": rounds, "emitted_in_rounds": emitted, "accepted": accepted, "drafted": drafted,
            "main_forwards": main_fw, "mtp_forwards": mtp_fw}


QUANT_BITS = {"int8": 8, "int4": 4}  # the exported low-bit weights a run can add to fp32


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``--batch-size 1,16,64`` -> (1, 16, 64); ValueError naming the bad value."""
    try:
        sizes = tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(b < 1 for b in sizes):
        raise ValueError(f"--batch-size {text!r}: comma-separated batch sizes >= 1, e.g. 1,16,64")
    return sizes


def parse_variants(draft_k: str, quant: str, quant_draft_k: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """``--draft-k 1,2`` and ``--quant int8,int4`` as (draft lengths, low-bit weights); ValueError naming the
    bad value and what is valid (fp32 plain decoding always runs, so it is neither a draft length nor a
    quantization)."""
    try:
        ks = tuple(int(k) for k in draft_k.split(",") if k.strip())
    except ValueError:
        raise ValueError(f"--draft-k {draft_k!r}: comma-separated draft lengths >= 1, e.g. 1,2,3,4 (empty: "
                         f"fp32 plain decoding only)") from None
    if any(k < 1 for k in ks) or quant_draft_k < 0:
        raise ValueError(f"--draft-k {draft_k!r} / --quant-draft-k {quant_draft_k}: draft lengths are >= 1 (plain "
                         f"decoding always runs; --quant-draft-k 0 means the low-bit weights run plain only)")
    qs = tuple(q.strip() for q in quant.split(",") if q.strip())
    bad = [q for q in qs if q not in QUANT_BITS]
    if bad:
        raise ValueError(f"--quant {','.join(bad)}: unknown low-bit weights; valid: {', '.join(QUANT_BITS)}, "
                         f"comma-separated, or empty for none (fp32 always runs)")
    return ks, qs


#: Linear shapes of the kernel table besides the model's own: JoyAI-LLM Flash's dense FFN up projection
#: (hidden 2048 -> 7168), whose fp32 weight (59 MB) does not fit a CPU's cache, so decoding it is
#: bound by memory bandwidth, where low-bit weights pay
LARGE_SHAPES = ((7168, 2048),)


def bench_decode(checkpoint: str | Path, out_dir: str | Path, *, problems: int = 64, batch_sizes=(1, 16, 64),
                 draft_ks=(1, 2, 3, 4), quant=("int8", "int4"), quant_draft_k: int = 3, group_size: int | None = None,
                 repeats: int = 3, threads: int | None = None) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    model, meta = load_lm(checkpoint)
    task = task_of(meta)
    group = group_size or meta["lm"].get("qat_group_size", 32)
    groups = {"int8": 0, "int4": group}  # INT8 per output channel (its kernel's scheme), INT4 grouped as trained
    probs = heldout(task, problems)
    max_new = task.answer_width + 1
    weights = {"fp32": model}
    for q in quant:
        weights[q] = quantize_model(copy.deepcopy(model), QUANT_BITS[q], groups[q]).eval()
    variants = [("fp32", 0)] + [("fp32", k) for k in draft_ks]
    for q in quant:
        variants += [(q, 0)] + ([(q, quant_draft_k)] if quant_draft_k else [])
    variants = [(w, k, b) for b in batch_sizes for w, k in variants]
    name = lambda w, k, b: f"{w} {'plain' if k == 0 else f'spec k={k}'}, batch {b}"  # noqa: E731
    kernels = {w: kernels_used(m) or {"fp32 F.linear": "all"} for w, m in weights.items()}
    workload = {"checkpoint": str(checkpoint), "task": task.describe(), "model": meta["lm"].get("config"),
                "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
                "qat": meta["lm"].get("qat"), "prompts": len(probs), "batch_sizes": list(batch_sizes),
                "max_new_tokens": max_new, "decoding": "greedy", "repeats": repeats, "warmup_passes": 1,
                "quant_group_size": {q: groups[q] or "per channel" for q in quant}, "kernels": kernels,
                "torch_threads": torch.get_num_threads(),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"}
    print("workload: " + ", ".join(f"{k}={v}" for k, v in workload.items()))
    prompts = {b: _prompts(probs, b) for b in batch_sizes}
    runs: dict[tuple, list[dict]] = {v: [] for v in variants}
    with torch.inference_mode():
        for w, k, b in variants:  # warm-up: allocator, caches, first-call overheads
            decode_pass(weights[w], prompts[b][:max(1, 8 // b)], max_new, k)
        for rep in range(repeats):
            for w, k, b in variants:
                r = decode_pass(weights[w], prompts[b], max_new, k)
                runs[(w, k, b)].append(r)
                print(f"  repeat {rep + 1}/{repeats} {name(w, k, b):<28} {r['tokens'] / r['seconds']:8.1f} tokens/s",
                      flush=True)
    ref = runs[("fp32", 0, batch_sizes[0])][0]["outputs"]
    table = {}
    for (w, k, b), rs in runs.items():
        base = statistics.median(r["tokens"] / r["seconds"] for r in runs[("fp32", 0, b)])
        tps = [r["tokens"] / r["seconds"] for r in rs]
        first = rs[0]
        plain = runs[(w, 0, b)][0]["outputs"]
        completions = [TOKENIZER.decode(o) for o in first["outputs"]]
        forwards = first["main_forwards"] + first["mtp_forwards"]
        table[name(w, k, b)] = {
            "weights": w, "draft_k": k, "batch_size": b, "tokens_per_s": tps, "median": statistics.median(tps),
            "min": min(tps), "max": max(tps), "ratio_vs_fp32_plain": statistics.median(tps) / base,
            "tokens": first["tokens"], "main_forwards_per_token": first["main_forwards"] / first["tokens"],
            "mtp_forwards_per_token": first["mtp_forwards"] / first["tokens"],
            "ms_per_forward": statistics.median(r["seconds"] for r in rs) / forwards * 1e3,
            "acceptance_length": first["emitted_in_rounds"] / first["rounds"] if k and first["rounds"] else None,
            "acceptance_rate": first["accepted"] / first["drafted"] if k and first["drafted"] else None,
            "same_as_plain": all(r["outputs"] == plain for r in rs),
            "agreement_vs_fp32": sum(a == b for a, b in zip(first["outputs"], ref)) / len(ref),
            "exact_match": sum(task.reward(p.prompt, c) for p, c in zip(probs, completions)) / len(probs)}
    shapes = _model_shapes(model.cfg) + list(LARGE_SHAPES)
    kernel_rows = linear_kernel_times(shapes, group, batch_sizes=(1, 16), repeats=repeats)
    result = {"benchmark": "decode", "meta": run_meta(), "workload": workload, "variants": table,
              "kernels": kernel_rows}
    path = out / "decode.json"
    path.write_text(json.dumps(result, indent=2))
    print(format_result(result))
    print(f"wrote {path}")
    return result


def _model_shapes(cfg) -> list[tuple[int, int]]:
    """[out, in] of the model's widest quantized projection (every expert's gate and up fused, as decoding
    runs them) and of a small one (attention output)."""
    return [(cfg.n_routed_experts * 2 * cfg.moe_intermediate_size, cfg.hidden_size),
            (cfg.hidden_size, cfg.num_attention_heads * cfg.v_head_dim)]


def linear_kernel_times(shapes, group_size: int, batch_sizes=(1, 16), repeats: int = 3) -> list[dict]:
    """Microseconds per call of one Linear [out, in] at each batch size: fp32 F.linear against the INT8
    (per channel) and INT4 (``group_size``) QuantizedLinear kernels; medians of ``repeats`` timings of a
    loop sized to ~0.2 s, every kernel timed in turn so drift cancels."""
    rows = []
    for out_f, in_f in shapes:
        lin = torch.nn.Linear(in_f, out_f, bias=False)
        mods = {"fp32": lin, "int8": QuantizedLinear.from_linear(lin, 8, 0),
                "int4": QuantizedLinear.from_linear(lin, 4, group_size)}
        for b in batch_sizes:
            x = torch.randn(b, in_f)
            with torch.inference_mode():
                for m in mods.values():
                    m(x)  # kernel operands packed outside the timing
                t0 = time.perf_counter()
                lin(x)
                n = max(5, min(5000, int(0.2 / max(time.perf_counter() - t0, 1e-6))))
                times: dict[str, list[float]] = {k: [] for k in mods}
                for _ in range(repeats):
                    for k, m in mods.items():
                        t0 = time.perf_counter()
                        for _ in range(n):
                            m(x)
                        times[k].append((time.perf_counter() - t0) / n * 1e6)
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append({"out": out_f, "in": in_f, "batch": b, "fp32_mb": out_f * in_f * 4 / 1e6,
                         "kernels": {k: getattr(m, "kernel", "F.linear") for k, m in mods.items()},
                         "us": med, "x_fp32": {k: med["fp32"] / v for k, v in med.items()}})
    return rows


def format_result(result: dict) -> str:
    """The variants table and, below it, the Linear kernel table."""
    text = format_table(result["variants"])
    if result.get("kernels"):
        text += "\n\nOne Linear layer alone, microseconds per call:\n\n" + format_kernels(result["kernels"])
    return text


def format_kernels(rows: list[dict]) -> str:
    lines = ["| Linear [out x in] | fp32 weight MB | batch | fp32 us | int8 us (x fp32) | int4 us (x fp32) | kernels |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        us, x = r["us"], r["x_fp32"]
        lines.append(f"| {r['out']} x {r['in']} | {r['fp32_mb']:.2f} | {r['batch']} | {us['fp32']:.1f} "
                     f"| {us['int8']:.1f} ({x['int8']:.2f}) | {us['int4']:.1f} ({x['int4']:.2f}) "
                     f"| {r['kernels']['int8']}, {r['kernels']['int4']} |")
    return "\n".join(lines)


def format_table(table: dict[str, dict]) -> str:
    lines = ["| variant | batch | tokens/s median (min-max) | x fp32 plain | acceptance length | acceptance rate "
             "| main / MTP forwards per token | ms per forward (main or MTP) | same tokens as plain | agreement vs fp32 "
             "| exact match |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in table.items():
        acc_len = "-" if r["acceptance_length"] is None else f"{r['acceptance_length']:.2f}"
        acc_rate = "-" if r["acceptance_rate"] is None else f"{r['acceptance_rate']:.1%}"
        lines.append(f"| {name.rsplit(', batch', 1)[0]} | {r.get('batch_size', 1)} "
                     f"| {r['median']:.0f} ({r['min']:.0f}-{r['max']:.0f}) | {r['ratio_vs_fp32_plain']:.2f} "
                     f"| {acc_len} | {acc_rate} | {r['main_forwards_per_token']:.2f} / {r['mtp_forwards_per_token']:.2f} "
                     f"| {r.get('ms_per_forward', float('nan')):.2f} | {'yes' if r['same_as_plain'] else 'NO'} "
                     f"| {r['agreement_vs_fp32']:.1%} | {r['exact_match']:.1%} |")
    return "\n".join(lines)
