"""DPO of a language model: preference pairs (read from JSONL or rejection-sampled from the model itself
and ranked by the task's checker), reference log-probs computed once, and the sigmoid DPO loss
(:func:`tristream.algos.dpo_loss`).

A pair is a prompt and two completions of it, the chosen one preferred. A JSONL pair file has one object per
line: ``{"prompt": "2740+3190=", "chosen": "58310", "rejected": "48200"}``. Rejection sampling draws
``samples_per_prompt`` completions per training prompt at the policy's temperature; a prompt gives a pair
when the checker accepts at least one completion and rejects another (chosen: the most frequent accepted
completion, rejected: the most frequent rejected one, i.e. the model's own typical mistake).

Sequence log-probs are sums over a completion's tokens and its EOS of the same distribution the RL policy
samples from (temperature 1 here, PAD and BOS excluded: :func:`tristream.lm.generate.tempered_logp`).
"""
from __future__ import annotations

import copy
import json
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from tristream.algos.dpo import dpo_loss
from tristream.lm.generate import sample_with_logp, tempered_logp
from tristream.lm.model import LM
from tristream.lm.tasks import Problem
from tristream.lm.tokenizer import NEVER_SAMPLED, ByteTokenizer
from tristream.lm.train import encode, lr_factor

TOKENIZER = ByteTokenizer()
PAIR_KEYS = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str


def read_pairs(path: str | Path) -> list[Pair]:
    """Pairs of a JSONL file; ValueError naming the file and line of the first bad record."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DPO pairs file {path} not found (JSONL of {{prompt, chosen, rejected}}; or leave "
                                f"dpo.pairs empty to rejection-sample pairs from the SFT model)")
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected an object with keys {', '.join(PAIR_KEYS)}, got {type(rec).__name__}")
        missing = [k for k in PAIR_KEYS if k not in rec]
        if missing:
            raise ValueError(f"{where}: missing key(s) {', '.join(missing)} (a pair needs {', '.join(PAIR_KEYS)})")
        bad = [k for k in PAIR_KEYS if not isinstance(rec[k], str) or not rec[k]]
        if bad:
            raise ValueError(f"{where}: {', '.join(bad)} must be non-empty strings")
        if rec["chosen"] == rec["rejected"]:
            raise ValueError(f"{where}: chosen and rejected are the same completion {rec['chosen']!r}")
        pairs.append(Pair(rec["prompt"], rec["chosen"], rec["rejected"]))
    if not pairs:
        raise ValueError(f"{path}: no pairs in the file")
    return pairs


def write_pairs(pairs: Sequence[Pair], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(p)) + "\n" for p in pairs))
    return path


def sequence_logp(model: LM, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
    """log pi(completion + EOS | BOS prompt) per row [N]: one teacher-forced forward of right-padded rows
    (gradients flow when enabled)."""
    tokens, mask = encode([Problem(p, c) for p, c in zip(prompts, completions)])  # mask: target tokens
    logits = model(tokens).logits[:, :-1]  # position t predicts token t + 1
    logp = tempered_logp(logits, 1.0, NEVER_SAMPLED).gather(-1, tokens[:, 1:, None])[..., 0]
    return torch.where(mask[:, 1:] > 0, logp, 0.0).sum(-1)


@torch.no_grad()
def reference_logp(model: LM, pairs: Sequence[Pair], batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen [N], rejected [N]) sequence log-probs under ``model`` (the frozen reference), computed once."""
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    for lo in range(0, len(pairs), batch_size):
        part = pairs[lo:lo + batch_size]
        chosen.append(sequence_logp(model, [p.prompt for p in part], [p.chosen for p in part]))
        rejected.append(sequence_logp(model, [p.prompt for p in part], [p.rejected for p in part]))
    model.train(was_training)
    return torch.cat(chosen), torch.cat(rejected)


@torch.no_grad()
def rejection_pairs(model: LM, task, *, prompts: int, samples_per_prompt: int, max_new_tokens: int,
                    temperature: float = 1.0, seed: int = 0, batch_rows: int = 256) -> tuple[list[Pair], dict]:
    """Pairs from the model's own samples of ``prompts`` training problems of ``task`` (a TextMix or an
    arithmetic task: ``problems`` and ``reward``). Returns (pairs, stats)."""
    problems = task.problems("train", prompts, seed=seed)
    rows = [p.prompt for p in problems for _ in range(samples_per_prompt)]
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(rows):
        by_len[len(p)].append(i)
    completions = [""] * len(rows)
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    for idx in by_len.values():
        for lo in range(0, len(idx), batch_rows):
            part = idx[lo:lo + batch_rows]
            prompt = torch.tensor([TOKENIZER.encode(rows[i], bos=True) for i in part])
            tokens, _, _ = sample_with_logp(model, prompt, max_new_tokens, temperature=temperature, eos_id=TOKENIZER.EOS,
                                         pad_id=TOKENIZER.PAD, banned=NEVER_SAMPLED, generator=gen)
            for i, t in zip(part, tokens.tolist()):
                completions[i] = TOKENIZER.decode(t)
    model.train(was_training)
    pairs, correct, all_right, all_wrong = [], 0, 0, 0
    for j, prob in enumerate(problems):
        outs = completions[j * samples_per_prompt:(j + 1) * samples_per_prompt]
        ok = [c for c in outs if task.reward(prob.prompt, c) == 1.0]
        bad = [c for c in outs if task.reward(prob.prompt, c) != 1.0 and c.strip()]
        correct += len(ok)
        all_right += len(ok) == len(outs)
        all_wrong += not ok
        if ok and bad:
            pairs.append(Pair(prob.prompt, Counter(ok).most_common(1)[0][0], Counter(bad).most_common(1)[0][0]))
    stats = {"prompts": prompts, "samples_per_prompt": samples_per_prompt, "pairs": len(pairs),
             "sample_accuracy": correct / max(len(rows), 1), "prompts_all_correct": all_right,
             "prompts_all_wrong": all_wrong}
    return pairs, stats


def dpo_train(model: LM, pairs: Sequence[Pair], d, *, seed: int = 0, tracker=None, progress: bool = True
              ) -> tuple[LM, list[dict[str, float]]]:
    """``d.steps`` DPO steps (``d``: the config's dpo section) of ``model`` on ``pairs``, against a frozen copy
    of ``model`` as the reference; returns (the trained model, the logged rows)."""
    if not pairs:
        raise ValueError(f"DPO needs at least one pair, got none (rejection sampling: every prompt's completions were "
                         f"all right or all wrong; raise dpo.prompts={d.prompts} or dpo.samples_per_prompt="
                         f"{d.samples_per_prompt}, or give a pairs file)")
    ref_c, ref_r = reference_logp(copy.deepcopy(model), pairs)  # once: the reference never changes
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=d.lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(i, d))
    rng = np.random.default_rng(seed)
    order = np.empty(0, dtype=np.int64)
    rows, window = [], []
    t0 = time.perf_counter()
    bar = tqdm(range(d.steps), desc="dpo", unit="step", disable=not progress)
    for step in bar:
        while len(order) < d.batch_size:  # epochs over the pairs, each shuffled
            order = np.concatenate([order, rng.permutation(len(pairs))])
        idx, order = order[:d.batch_size], order[d.batch_size:]
        part = [pairs[i] for i in idx]
        prompts = [p.prompt for p in part]
        logp = sequence_logp(model, prompts + prompts, [p.chosen for p in part] + [p.rejected for p in part])
        n = len(part)
        loss, diag = dpo_loss(logp[:n], logp[n:], ref_c[idx], ref_r[idx], beta=d.beta,
                              label_smoothing=d.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), d.max_grad_norm or float("inf"))
        opt.step()
        sched.step()
        window.append({"loss": loss.item(), "grad_norm": float(gn), **{k: float(v) for k, v in diag.items()}})
        if (step + 1) % d.log_every == 0 or step + 1 == d.steps:
            row = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
            row["lr"] = sched.get_last_lr()[0]
            rows.append({"step": step + 1, **row})
            window = []
            bar.set_postfix(loss=f"{row['loss']:.3f}", margin=f"{row['reward_margin']:.2f}",
                            acc=f"{row['reward_accuracy']:.2f}")
            if tracker is not None:
                tracker.log(step + 1, row, phase="dpo")
            if not progress:
                print(f"dpo step {step + 1}/{d.steps} | loss {row['loss']:.4f} | margin {row['reward_margin']:.3f} "
                      f"| reward acc {row['reward_accuracy']:.2f} | chosen {row['chosen_logp']:.2f} "
                      f"| rejected {row['rejected_logp']:.2f} | {time.perf_counter() - t0:.0f} s", flush=True)
    model.eval()
    return model, rows


def summary_line(stats: dict[str, Any]) -> str:
    return (f"{stats['pairs']} pairs from {stats['prompts']} prompts x {stats['samples_per_prompt']} samples "
            f"(sample accuracy {stats['sample_accuracy']:.2f}; {stats['prompts_all_correct']} prompts all right, "
            f"{stats['prompts_all_wrong']} all wrong)")


__all__ = ["Pair", "read_pairs", "write_pairs", "sequence_logp", "reference_logp", "rejection_pairs", "dpo_train",
           "summary_line"]
