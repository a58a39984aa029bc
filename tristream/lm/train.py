"""SFT of a language policy on a verifiable task: ``tristream sft --preset lm_tiny --out DIR``.

One step: ``batch_size`` fresh training problems -> BOS prompt answer EOS token rows, loss on the answer
and EOS only; loss = CE(next token) + ``mtp_weight`` x CE(MTP, token t+2) (LM.loss); AdamW with linear
warm-up then cosine or linear decay to ``lr x min_lr_ratio``; gradient clipping; then the aux-loss-free
router bias update (LM.update_router_bias). With ``lm.qat=int4|int8`` the Linear layers train through
fake-quantized weights from step ``qat_start`` on (tristream.lm.quant). Every ``eval_every`` steps the
held-out exact match of greedy decoding is measured. The folder gets ``lm.safetensors`` + ``lm.json``
(load with :func:`load_lm`), ``metrics.jsonl`` / TensorBoard (phases ``sft`` and ``eval``), and
``eval.json`` (final accuracy: fp32, fake-quantized and exported INT8 / INT4; again later with
``tristream eval DIR``)
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from tristream.lm.config import LMConfig
from tristream.lm.model import LM
from tristream.lm.quant import apply_qat, quantize_model
from tristream.lm.tasks import ArithmeticTask, Problem, make_task
from tristream.lm.tokenizer import ByteTokenizer

TOKENIZER = ByteTokenizer()
EVAL_SEED = 1_000_003  # held-out problems come from their own split; a fixed seed keeps evals comparable


def task_from(lm) -> ArithmeticTask:
    """The task of a ``cfg.lm`` section."""
    return make_task(lm.task, digits=lm.digits, reverse=lm.reverse, heldout_fraction=lm.heldout_fraction)


def model_config(lm) -> LMConfig:
    """LMConfig of a ``cfg.lm`` section: preset or config.json, the byte vocabulary, the run's bias rate."""
    src = lm.config
    base = LMConfig.from_json(src) if src.endswith(".json") or os.sep in src else LMConfig.preset(src)
    changes: dict[str, Any] = {"vocab_size": TOKENIZER.vocab_size}
    if lm.router_bias_rate is not None:
        changes["router_bias_update_rate"] = lm.router_bias_rate
    if lm.router_bias_update is not None:
        changes["router_bias_update"] = lm.router_bias_update
    return dataclasses.replace(base, **changes)


def encode(problems: list[Problem], tok: ByteTokenizer = TOKENIZER) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [B, T], loss_mask [B, T]): rows ``BOS prompt answer EOS`` right-padded with PAD;
    loss_mask[b, t] = 1 where token t is an answer or EOS token (a prediction target)."""
    rows, masks = [], []
    for p in problems:
        prompt = tok.encode(p.prompt, bos=True)
        answer = tok.encode(p.answer, eos=True)
        rows.append(prompt + answer)
        masks.append([0] * len(prompt) + [1] * len(answer))
    tokens = tok.batch(rows)
    mask = torch.zeros_like(tokens, dtype=torch.float32)
    for b, m in enumerate(masks):
        mask[b, :len(m)] = torch.tensor(m, dtype=torch.float32)
    return tokens, mask


@torch.no_grad()
def exact_match(model: LM, task: ArithmeticTask, problems: list[Problem], *, batch_size: int = 128,
                draft_k: int = 0) -> dict[str, Any]:
    """Greedy-decode every prompt (batched; prompts of one task share a length) and check the answers.
    Returns {"exact_match", "n", "completions"}."""
    from tristream.lm.generate import generate
    was_training = model.training
    model.eval()
    completions: list[str] = [""] * len(problems)
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(problems):  # one batch holds one prompt length (a text mix has several)
        by_len.setdefault(len(p.prompt), []).append(i)
    for rows in by_len.values():
        for j in range(0, len(rows), batch_size):
            chunk = rows[j:j + batch_size]
            prompt = TOKENIZER.batch([TOKENIZER.encode(problems[i].prompt, bos=True) for i in chunk])
            out, _ = generate(model, prompt, task.answer_width + 1, temperature=0.0, draft_k=draft_k,
                              eos_id=TOKENIZER.EOS)
            for i, row in zip(chunk, out):
                completions[i] = TOKENIZER.decode(row[prompt.shape[1]:].tolist())
    model.train(was_training)
    rewards = [task.reward(p.prompt, c) for p, c in zip(problems, completions)]
    return {"exact_match": sum(rewards) / len(rewards), "n": len(rewards), "completions": completions}


def heldout(task: ArithmeticTask, n: int) -> list[Problem]:
    return task.problems("heldout", n, seed=EVAL_SEED)


def lr_factor(step: int, lm) -> float:
    """Learning-rate multiplier after ``step`` optimizer steps of a section with ``steps``, ``warmup_steps``,
    ``schedule`` (cosine | linear) and ``min_lr_ratio`` (cfg.lm, cfg.dpo): linear warm-up, then decay."""
    if step < lm.warmup_steps:
        return (step + 1) / lm.warmup_steps
    frac = min(1.0, (step - lm.warmup_steps) / max(1, lm.steps - lm.warmup_steps))
    decay = 0.5 * (1 + math.cos(math.pi * frac)) if lm.schedule == "cosine" else 1.0 - frac
    return lm.min_lr_ratio + (1 - lm.min_lr_ratio) * decay


def _bias_rate_factor(step: int, lm) -> float:
    """Multiplier of the router-bias rate after optimizer step ``step``: 1, or with
    ``router_bias_schedule=lr_decay`` the learning rate's factor once warm-up is over (1 during it)."""
    if lm.router_bias_schedule == "constant" or step < lm.warmup_steps:
        return 1.0
    return lr_factor(step, lm)


def _qat_bits(lm) -> int | None:
    return {"none": None, "int8": 8, "int4": 4}[lm.qat]


def sft_lm(cfg, out_dir: str | Path, *, task=None, tracker=None, progress: bool = True) -> LM:
    """Train ``cfg.lm.steps`` SFT steps of a fresh LM on ``task`` (default: the arithmetic ``cfg.lm.task``;
    anything with its ``problems`` / ``reward`` / ``answer_width``, e.g. a text env's domain mix); save it to
    ``out_dir``; return it."""
    lm, out = cfg.lm, Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if lm.teacher_error and task is None:
        raise ValueError(f"lm.teacher_error={lm.teacher_error} needs a text env (env.name=text...): the arithmetic "
                         f"lm.task has no mistake model")
    task, mcfg = task if task is not None else task_from(lm), model_config(lm)
    torch.manual_seed(cfg.run.seed)
    if lm.init:  # continue from a saved LM (e.g. a QAT stage after SFT): its architecture, this run's bias update
        model = load_lm(lm.init)[0]
        mcfg = model.cfg = dataclasses.replace(model.cfg, router_bias_update_rate=mcfg.router_bias_update_rate,
                                               router_bias_update=mcfg.router_bias_update)
    else:
        model = LM(mcfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lm.lr, weight_decay=lm.weight_decay, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(i, lm))
    bits = _qat_bits(lm)
    eval_set = heldout(task, lm.eval_problems)
    print(f"[tristream] LM SFT: task {task.describe()}, training operand digits 0 with p={lm.zero_digit_prob}, "
          f"teacher error {lm.teacher_error}; "
          f"model {lm.config} "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params{', from ' + lm.init if lm.init else ''}), "
          f"{lm.steps} steps x {lm.batch_size}, "
          f"mtp_weight {lm.mtp_weight}, qat {lm.qat}, router bias {mcfg.router_bias_update} rate "
          f"{mcfg.router_bias_update_rate} ({lm.router_bias_schedule})")
    noisy = {"teacher_error": lm.teacher_error} if lm.teacher_error else {}  # (ArithmeticTask has no mistakes)
    bar = tqdm(range(lm.steps), desc="sft-lm", unit="step", disable=not progress)
    t0, window, loads, last_eval = time.perf_counter(), [], [], None
    for step in bar:
        if bits and step == lm.qat_start:
            apply_qat(model, bits, lm.qat_group_size)  # same Parameters: the optimizer state carries over
        tokens, mask = encode(task.problems("train", lm.batch_size, seed=cfg.run.seed * 10_000_019 + step,
                                            zero_digit_prob=lm.zero_digit_prob, **noisy))
        loss, stats = model.loss(tokens, mask, mtp_weight=lm.mtp_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), lm.max_grad_norm or float("inf"))
        opt.step()
        sched.step()
        counts = [m.last_load.float() for m in model.moe_layers()]  # tokens per expert, this step [E]
        win_counts = counts if not window else [a + c for a, c in zip(win_counts, counts)]
        load = model.update_router_bias(mcfg.router_bias_update_rate * _bias_rate_factor(step, lm))  # {}: dense
        window.append({**stats, "grad_norm": gn.item(), **load})
        if (step + 1) % lm.log_every == 0 or step + 1 == lm.steps:
            row = {k: sum(w[k] for w in window if k in w) / len(window) for k in window[-1]}
            if load:  # per step (one batch) and over the whole logging window (summed counts)
                row["load_max_mean_worst_max"] = max(w["load_max_mean_worst"] for w in window)
                ratios = [(c.max() / c.mean()).item() for c in win_counts]
                row["load_window_max_mean"] = sum(ratios) / len(ratios)
                row["load_window_max_mean_worst"] = max(ratios)
                loads.append(row)
            row.update(lr=sched.get_last_lr()[0], tokens_per_s=(step + 1) * tokens.numel() / (time.perf_counter() - t0))
            bar.set_postfix(loss=f"{row['loss']:.3f}", load=f"{row.get('load_max_mean', 0):.2f}",
                            em="-" if last_eval is None else f"{last_eval:.2f}")
            if tracker is not None:
                tracker.log(step + 1, row, phase="sft")
            if not progress:
                print(f"step {step + 1}/{lm.steps} | loss {row['loss']:.4f} | load max/mean {row.get('load_max_mean', 0):.2f} "
                      f"| tok/s {row['tokens_per_s']:.0f}", flush=True)
            window = []
        if (step + 1) % lm.eval_every == 0 or step + 1 == lm.steps:
            last_eval = exact_match(model, task, eval_set)["exact_match"]
            if tracker is not None:
                tracker.log(step + 1, {"exact_match": last_eval}, phase="eval")
            if not progress:
                print(f"eval step {step + 1}: held-out exact match {last_eval:.3f}", flush=True)
    model.eval()
    info = {"train_seconds": time.perf_counter() - t0, "load_max_mean": _load_summary(loads)}
    save_lm(model, out, cfg, extra=info)
    results = evaluate_variants(model, task, eval_set, lm.qat_group_size)
    (out / "eval.json").write_text(json.dumps({"heldout_problems": len(eval_set), **results, **info}, indent=2))
    print("[tristream] held-out exact match: " + ", ".join(f"{k} {v:.3f}" for k, v in results.items()))
    return model


def _load_summary(rows: list[dict[str, float]]) -> dict[str, float]:
    """Expert load max/mean (tokens per expert, max over experts / mean) summarised over training from the
    logged rows: ``step_*`` per optimizer step (one batch), ``window_*`` over each logging window (counts
    summed over ``log_every`` steps); ``mean`` averages the MoE layers, ``worst`` takes the worst layer;
    for the whole run and after its first 10% (once the router bias had time to move)."""
    if not rows:
        return {}
    out = {}
    for name, part in (("all", rows), ("after_10pct", rows[len(rows) // 10:])):
        for key, col in (("step_mean", "load_max_mean"), ("step_worst", "load_max_mean_worst"),
                         ("window_mean", "load_window_max_mean"), ("window_worst", "load_window_max_mean_worst")):
            vals = [r[col] for r in part]
            out[f"{name}_{key}_avg"] = sum(vals) / len(vals)
            out[f"{name}_{key}_max"] = max(vals)
    out["all_step_worst_max"] = max(r["load_max_mean_worst_max"] for r in rows)
    return out


@torch.no_grad()
def frozen_bias_load(model: LM, task: ArithmeticTask, *, batches: int = 100, batch_size: int = 64,
                     seed: int = 99_000, zero_digit_prob: float = 0.3) -> torch.Tensor:
    """Expert load max/mean per training batch with the router bias held fixed: [batches, MoE layers].

    The per-step load statistic that ``sft_lm`` logs, with nothing moving: each batch is ``batch_size``
    fresh training problems (as SFT samples them), routed in training mode, but no optimizer step and no
    bias update happen. The spread over batches is then only which tokens each batch holds, and the level
    is the imbalance of this bias snapshot itself. The model's bias and load counters are left as they were."""
    was_training = model.training
    model.train()
    saved = [m.router.load.clone() for m in model.moe_layers()]
    rows = []
    try:
        for b in range(batches):
            tokens, _ = encode(task.problems("train", batch_size, seed=seed + b, zero_digit_prob=zero_digit_prob))
            model(tokens)
            rows.append(model.layer_loads())
    finally:
        for m, load in zip(model.moe_layers(), saved):
            m.router.load.copy_(load)
        model.train(was_training)
    return torch.tensor(rows)


def evaluate_variants(model: LM, task: ArithmeticTask, problems: list[Problem], group_size: int) -> dict[str, float]:
    """Held-out exact match (greedy decoding) of the fp32 weights (fake quantization off), the
    fake-quantized model (what QAT trains) and the real INT8 / INT4 exports of the same weights
    (round-to-nearest, ``group_size``); plus ``<variant>_token_acc`` / ``<variant>_ce``, the teacher-forced
    accuracy and cross-entropy on the answer and EOS tokens (finer-grained than exact match)."""
    from tristream.lm.quant import remove_qat
    fp = remove_qat(_copy(model))
    variants = {"fp32": fp}
    for b in (8, 4):
        variants[f"fake_int{b}"] = apply_qat(_copy(fp), b, group_size)
        variants[f"int{b}"] = quantize_model(_copy(fp), b, group_size)
    tokens, mask = encode(problems)
    res: dict[str, float] = {}
    for name, m in variants.items():
        res[name] = exact_match(m, task, problems)["exact_match"]
        with torch.no_grad():
            stats = m.loss(tokens, mask, mtp_weight=0.0)[1]
        res[f"{name}_token_acc"], res[f"{name}_ce"] = stats["acc"], stats["ce"]
    return res


def task_of(meta: dict[str, Any]) -> ArithmeticTask:
    """The task a checkpoint was trained on (its ``lm.json``)."""
    from tristream.config.schema import LMTrainConfig
    return task_from(LMTrainConfig(**meta["lm"]))


def evaluate_checkpoint(path: str | Path, *, problems: int | None = None, group_size: int | None = None
                        ) -> dict[str, Any]:
    """:func:`evaluate_variants` of a saved LM on its task's held-out problems (``tristream eval DIR``);
    defaults: the checkpoint's eval_problems and qat_group_size."""
    model, meta = load_lm(path)
    n, g = problems or meta["lm"]["eval_problems"], group_size or meta["lm"]["qat_group_size"]
    return {"heldout_problems": n, "group_size": g, "qat": meta["lm"]["qat"],
            **evaluate_variants(model, task_of(meta), heldout(task_of(meta), n), g)}


def _copy(model: LM) -> LM:
    import copy
    return copy.deepcopy(model).eval()


def save_lm(model: LM, out_dir: str | Path, cfg=None, extra: dict | None = None) -> Path:
    """``lm.safetensors`` (fp32 master weights, plain-Linear names even after QAT) + ``lm.json``."""
    from safetensors.torch import save_file
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "lm.safetensors"))
    meta = {"kind": "lm", "lm_config": model.cfg.to_dict(), "tokenizer": "byte",
            "lm": dataclasses.asdict(cfg.lm) if cfg is not None else {}, "extra": extra or {}}
    (out / "lm.json").write_text(json.dumps(meta, indent=2))
    return out


def load_lm(path: str | Path) -> tuple[LM, dict[str, Any]]:
    """(model in eval mode, metadata) from a folder written by :func:`save_lm`."""
    from safetensors.torch import load_file
    path = Path(path)
    if not (path / "lm.json").exists():
        raise FileNotFoundError(f"{path / 'lm.json'} not found: is {path} an LM checkpoint (tristream sft "
                                "with policy.name=lm)?")
    meta = json.loads((path / "lm.json").read_text())
    model = LM(LMConfig.from_json(meta["lm_config"]))
    model.load_state_dict(load_file(str(path / "lm.safetensors")), strict=True)
    return model.eval(), meta
