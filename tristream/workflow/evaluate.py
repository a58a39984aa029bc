"""``tristream eval``: success per task family on held-out seeds, with 95% confidence intervals and GIFs
(text envs: every prompt, completion and answer in ``<label>_samples.jsonl``).

Held-out seeds start at ``eval.seed_offset`` (10**7 by default); training and demonstrations use seeds
below it. Envs run in this process, batched through one policy forward per decision step.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np
import torch

from tristream.envs.from_config import env_from_config
from tristream.types import ObsBatch

TEXT_KEYS = ("prompt", "completion", "answer", "tokens")  # what a text env's info adds, kept per episode


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (well-behaved near 0 and 1, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@torch.no_grad()
def evaluate(policy, cfg, *, episodes: int | None = None, out_dir: str | Path | None = None, label: str = "eval",
             num_envs: int | None = None) -> dict[str, Any]:
    e = cfg.eval
    episodes = episodes or e.episodes
    seeds = [e.seed_offset + i for i in range(episodes)]
    envs = [env_from_config(cfg.env) for _ in range(min(num_envs or e.num_envs, episodes))]
    policy.eval()
    results: list[dict[str, Any]] = []
    frames: dict[int, list[np.ndarray]] = defaultdict(list)
    slots: list[dict[str, Any] | None] = [None] * len(envs)
    next_seed = 0

    def start(i: int) -> None:
        nonlocal next_seed
        if next_seed >= len(seeds):
            slots[i] = None
            return
        obs = envs[i].reset(seed=seeds[next_seed])
        slots[i] = {"episode": next_seed, "obs": obs, "return": 0.0, "steps": 0}
        if next_seed < e.videos:
            _add_frame(frames[next_seed], envs[i], obs)
        next_seed += 1

    for i in range(len(envs)):
        start(i)
    while any(slots):
        active = [i for i, s in enumerate(slots) if s is not None]
        batch = ObsBatch.stack([slots[i]["obs"] for i in active])
        chunks = policy.act(batch.as_dict(), deterministic=e.deterministic).actions.numpy()
        for i, chunk in zip(active, chunks):
            s = slots[i]
            for a in chunk:
                obs, r, terminated, truncated, info = envs[i].step(a)
                s["return"] += float(r)
                s["steps"] += 1
                if s["episode"] < e.videos:
                    _add_frame(frames[s["episode"]], envs[i], obs)
                if terminated or truncated:
                    results.append({"episode": s["episode"], "seed": seeds[s["episode"]], "task": envs[i].task,
                                    "success": bool(info.get("success", False)), "return": s["return"],
                                    "length": s["steps"],
                                    **{k: info[k] for k in TEXT_KEYS if k in info}})
                    start(i)
                    break
            else:
                s["obs"] = obs
    for env in envs:
        env.close()
    summary = summarize(results)
    if out_dir is not None and results and "completion" in results[0]:  # a text env: what the model wrote
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"{label}_samples.jsonl", "w") as fh:
            for r in sorted(results, key=lambda r: r["episode"]):
                fh.write(json.dumps({k: r[k] for k in ("task", "seed", "success", *TEXT_KEYS)}) + "\n")
        summary["samples"] = str(out / f"{label}_samples.jsonl")
    frames = {ep: fr for ep, fr in frames.items() if fr}
    if out_dir is not None and frames:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        by_ep = {r["episode"]: r for r in results}
        for ep, fr in sorted(frames.items()):
            tag = "success" if by_ep[ep]["success"] else "failure"
            imageio.mimsave(out / f"{label}_ep{ep:03d}_{by_ep[ep]['task']}_{tag}.gif", fr, duration=0.1, loop=0)
    summary["label"] = label
    return summary


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Success with its Wilson CI, overall and per task; for a text env also the mean generated tokens per
    episode and the token efficiency, correct answers per 1,000 generated tokens."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_task[r["task"]].append(r)
    tasks = {task: _rates(rs) for task, rs in sorted(by_task.items())}
    return {**_rates(results), "tasks": tasks,
            "return": float(np.mean([r["return"] for r in results])) if results else 0.0}


def _rates(results: list[dict[str, Any]]) -> dict[str, Any]:
    n_succ = sum(r["success"] for r in results)
    lo, hi = wilson_interval(n_succ, len(results))
    out = {"success": n_succ / max(len(results), 1), "ci95": [lo, hi], "episodes": len(results)}
    if results and "tokens" in results[0]:
        tokens = sum(r["tokens"] for r in results)
        out["mean_tokens"] = tokens / len(results)
        out["success_per_1k_tokens"] = 1000.0 * n_succ / max(tokens, 1)
    return out


def _add_frame(frames: list[np.ndarray], env, obs: dict[str, Any]) -> None:
    """All cameras side by side; an env without cameras may offer ``render_frame()`` (else no video)."""
    if len(obs["images"]):
        frames.append(np.concatenate(list(obs["images"]), axis=1))
    elif (frame := getattr(env, "render_frame", lambda: None)()) is not None:
        frames.append(frame)


def format_token_table(rows: dict[str, dict[str, Any]]) -> str:
    """A text env's cost per evaluated checkpoint: mean generated tokens and correct answers per 1,000
    generated tokens, per task ("" when the results have no token counts)."""
    labels = list(rows)
    if not labels or "mean_tokens" not in rows[labels[0]]:
        return ""
    tasks = sorted({t for r in rows.values() for t in r["tasks"]})
    w = max([10, *(len(t) + 1 for t in tasks)])
    header = f"{'task':<{w}}" + "".join(f"{lab + ' tokens':>16}{lab + ' acc/1k tok':>18}" for lab in labels)
    lines = [header, "-" * len(header)]
    for t in [*tasks, "all"]:
        cells = [rows[lab] if t == "all" else rows[lab]["tasks"].get(t) for lab in labels]
        lines.append(f"{t:<{w}}" + "".join(f"{c['mean_tokens']:>16.2f}{c['success_per_1k_tokens']:>18.1f}" if c
                                          else " " * 34 for c in cells))
    return "\n".join(lines)


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    """Success per task family for several evaluated checkpoints (columns), with 95% CIs (and for a text
    env the token table below it)."""
    labels = list(rows)
    tasks = sorted({t for r in rows.values() for t in r["tasks"]})
    w = max([10, *(len(t) + 1 for t in tasks)])
    header = f"{'task':<{w}}" + "".join(f"{lab:>22}" for lab in labels)
    lines = [header, "-" * len(header)]

    def cell(d):
        return f"{d['success']:.2f} [{d['ci95'][0]:.2f},{d['ci95'][1]:.2f}]".rjust(22)

    for t in tasks:
        lines.append(f"{t:<{w}}" + "".join(cell(rows[lab]["tasks"][t]) if t in rows[lab]["tasks"] else " " * 22
                                          for lab in labels))
    lines.append(f"{'all':<{w}}" + "".join(cell(rows[lab]) for lab in labels))
    lines.append(f"{'return':<{w}}" + "".join(f"{rows[lab]['return']:.2f}".rjust(22) for lab in labels))
    if tokens := format_token_table(rows):  # a text env: what the answers cost
        lines += ["", "Generated tokens per episode and correct answers per 1,000 generated tokens:", tokens]
    return "\n".join(lines)
