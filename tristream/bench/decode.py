"""``tristream bench decode``: tokens/s of plain greedy decoding vs MTP self-speculative decoding (draft
k = 1..4), with fp32 weights and with real INT8 / INT4 exported weights, side by side in one run.

Protocol (docs/benchmarks.md, applied to decoding): every variant decodes the same held-out prompts of the
checkpoint's task (greedy, up to the answer width + EOS), one warm-up pass per variant first, then
``repeats`` measured passes with the variants interleaved (A B C ... A B C ...) so machine drift cancels.
Throughput = generated tokens (up to and including EOS) / wall seconds of the pass; medians over repeats
and the ratio of medians to plain fp32 decoding. Checked, not assumed: speculative output equals plain
output of the same weights token for token (greedy), and INT8 / INT4 outputs are compared with fp32
(agreement) and graded by the task's checker (exact match). Acceptance: mean tokens emitted per main-model
verification round (accepted drafts + 1, the report's "acceptance length"; the first token, from the prompt's
forward, is in no round) and accepted / drafted tokens.
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

from tristream.bench.meta import run_meta
from tristream.lm.generate import generate
from tristream.lm.quant import quantize_model
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


def bench_decode(checkpoint: str | Path, out_dir: str | Path, *, problems: int = 64, batch_size: int = 1,
                 draft_ks=(1, 2, 3, 4), quant=("int8", "int4"), quant_draft_k: int = 3, group_size: int | None = None,
                 repeats: int = 3, threads: int | None = None) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    model, meta = load_lm(checkpoint)
    task = task_of(meta)
    group = group_size or meta["lm"].get("qat_group_size", 32)
    probs = heldout(task, problems)
    prompts = _prompts(probs, batch_size)
    max_new = task.answer_width + 1
    weights = {"fp32": model}
    for q in quant:
        weights[q] = quantize_model(copy.deepcopy(model), QUANT_BITS[q], group).eval()
    variants = [("fp32", 0)] + [("fp32", k) for k in draft_ks]
    for q in quant:
        variants += [(q, 0)] + ([(q, quant_draft_k)] if quant_draft_k else [])
    name = lambda w, k: f"{w} {'plain' if k == 0 else f'spec k={k}'}"  # noqa: E731
    workload = {"checkpoint": str(checkpoint), "task": task.describe(), "model": meta["lm"].get("config"),
                "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
                "qat": meta["lm"].get("qat"), "prompts": len(probs), "batch_size": batch_size,
                "max_new_tokens": max_new, "decoding": "greedy", "repeats": repeats, "warmup_passes": 1,
                "quant_group_size": group, "torch_threads": torch.get_num_threads(),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"}
    print("workload: " + ", ".join(f"{k}={v}" for k, v in workload.items()))
    runs: dict[tuple, list[dict]] = {v: [] for v in variants}
    with torch.inference_mode():
        for w, k in variants:  # warm-up: allocator, caches, first-call overheads
            decode_pass(weights[w], prompts[:max(1, 8 // batch_size)], max_new, k)
        for rep in range(repeats):
            for w, k in variants:
                r = decode_pass(weights[w], prompts, max_new, k)
                runs[(w, k)].append(r)
                print(f"  repeat {rep + 1}/{repeats} {name(w, k):<16} {r['tokens'] / r['seconds']:8.1f} tokens/s",
                      flush=True)
    base = statistics.median(r["tokens"] / r["seconds"] for r in runs[("fp32", 0)])
    ref = runs[("fp32", 0)][0]["outputs"]
    table = {}
    for (w, k), rs in runs.items():
        tps = [r["tokens"] / r["seconds"] for r in rs]
        first = rs[0]
        plain = runs[(w, 0)][0]["outputs"]
        completions = [TOKENIZER.decode(o) for o in first["outputs"]]
        table[name(w, k)] = {
            "weights": w, "draft_k": k, "tokens_per_s": tps, "median": statistics.median(tps),
            "min": min(tps), "max": max(tps), "ratio_vs_fp32_plain": statistics.median(tps) / base,
            "tokens": first["tokens"], "main_forwards_per_token": first["main_forwards"] / first["tokens"],
            "mtp_forwards_per_token": first["mtp_forwards"] / first["tokens"],
            "acceptance_length": first["emitted_in_rounds"] / first["rounds"] if k and first["rounds"] else None,
            "acceptance_rate": first["accepted"] / first["drafted"] if k and first["drafted"] else None,
            "same_as_plain": all(r["outputs"] == plain for r in rs),
            "agreement_vs_fp32": sum(a == b for a, b in zip(first["outputs"], ref)) / len(ref),
            "exact_match": sum(task.reward(p.prompt, c) for p, c in zip(probs, completions)) / len(probs)}
    result = {"benchmark": "decode", "meta": run_meta(), "workload": workload, "variants": table}
    path = out / "decode.json"
    path.write_text(json.dumps(result, indent=2))
    print(format_table(table))
    print(f"wrote {path}")
    return result


def format_table(table: dict[str, dict]) -> str:
    lines = ["| variant | tokens/s median (min-max) | x fp32 plain | acceptance length | acceptance rate "
             "| main / MTP forwards per token | same tokens as plain | agreement vs fp32 | exact match |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in table.items():
        acc_len = "-" if r["acceptance_length"] is None else f"{r['acceptance_length']:.2f}"
        acc_rate = "-" if r["acceptance_rate"] is None else f"{r['acceptance_rate']:.1%}"
        lines.append(f"| {name} | {r['median']:.0f} ({r['min']:.0f}-{r['max']:.0f}) | {r['ratio_vs_fp32_plain']:.2f} "
                     f"| {acc_len} | {acc_rate} | {r['main_forwards_per_token']:.2f} / {r['mtp_forwards_per_token']:.2f} "
                     f"| {'yes' if r['same_as_plain'] else 'NO'} "
                     f"| {r['agreement_vs_fp32']:.1%} | {r['exact_match']:.1%} |")
    return "\n".join(lines)
