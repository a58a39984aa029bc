"""The default recipe (the main job): collect demos -> SFT -> RL -> evaluate SFT and RL -> summary.
Envs without a scripted expert skip demos and SFT: RL starts from a fresh policy, evaluated as "init".
A language policy (policy.name=lm) on a text env replaces demos and behaviour cloning by SFT on the
env's training problems (``--preset lm_text``), then DPO when ``dpo.steps`` > 0."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from tristream.config import save_config
from tristream.metrics.plots import learning_curve
from tristream.metrics.tracker import Tracker
from tristream.policies.io import load_policy, save_policy
from tristream.policies.from_config import build_policy
from tristream.provenance import run_meta
from tristream.workflow.collect import collect
from tristream.workflow.evaluate import evaluate, format_table
from tristream.workflow.rl import StopFlag, rl_train
from tristream.workflow.sft import sft


def _demos_and_sft(cfg, run_dir: Path, demos: Path, sft_dir: Path, env_spec, timings: dict, progress: bool,
                   stop) -> None:
    if not demos.exists():
        t = time.perf_counter()
        print(f"[tristream] 1/4 collecting {cfg.collect.episodes} expert demos -> {demos}")
        stats = collect(cfg, demos, progress=progress)
        timings["collect_s"] = time.perf_counter() - t
        print(f"[tristream] expert success {stats['expert_success']:.2f} at noise {cfg.collect.expert_noise}")
    if stop():
        return
    if not (sft_dir / "policy.safetensors").exists():
        t = time.perf_counter()
        print(f"[tristream] 2/4 SFT: {cfg.sft.steps} behaviour-cloning steps -> {sft_dir}")
        tracker = Tracker(run_dir)
        sft(cfg, demos, sft_dir, env_spec, tracker=tracker, progress=progress)
        tracker.close()
        timings["sft_s"] = time.perf_counter() - t


def _language_sft(cfg, run_dir: Path, sft_dir: Path, timings: dict, progress: bool) -> None:
    from tristream.workflow.language import is_text_env, language_sft
    if not is_text_env(cfg.env):
        raise ValueError(f"the recipe of a language policy (policy.name=lm) needs a text env (env.name=text or "
                         f"text/<domain>), got env.name={cfg.env.name!r}")
    if not (sft_dir / "policy.safetensors").exists():
        t = time.perf_counter()
        print(f"[tristream] 1-2/4 SFT of the language policy: {cfg.lm.steps} steps on the text env's training "
              f"problems -> {sft_dir}")
        tracker = Tracker(run_dir)
        language_sft(cfg, sft_dir, tracker=tracker, progress=progress)
        tracker.close()
        timings["sft_s"] = time.perf_counter() - t


def _language_dpo(cfg, run_dir: Path, sft_dir: Path, dpo_dir: Path, timings: dict, progress: bool) -> None:
    from tristream.workflow.language import language_dpo
    if not (dpo_dir / "policy.safetensors").exists():
        t = time.perf_counter()
        print(f"[tristream] 2b/4 DPO of the language policy: {cfg.dpo.steps} steps -> {dpo_dir}")
        tracker = Tracker(run_dir)
        language_dpo(cfg, sft_dir, dpo_dir, tracker=tracker, progress=progress)
        tracker.close()
        timings["dpo_s"] = time.perf_counter() - t


def run_recipe(cfg, run_dir: Path, env_spec, *, resume: bool = False, progress: bool = True) -> dict:
    """Every stage writes into ``run_dir``; a stage whose output already exists is skipped, so
    ``--resume`` continues an interrupted recipe where it stopped."""
    t0 = time.perf_counter()
    save_config(cfg, run_dir / "config.yaml")
    demos = run_dir / "demos.hdf5"
    sft_dir = run_dir / "sft"
    timings: dict[str, float] = {}
    baselines: dict[str, Path] = {}  # stages before RL's start that are evaluated too (SFT before DPO)
    with StopFlag() as stop:
        if cfg.policy.name == "lm":  # a language policy: SFT on the text env's own problems, no demos
            start, start_label = sft_dir, "sft"
            _language_sft(cfg, run_dir, sft_dir, timings, progress)
            if cfg.dpo.steps > 0 and not stop():  # SFT -> DPO -> RL
                baselines["sft"] = sft_dir
                start, start_label = run_dir / "dpo", "dpo"
                _language_dpo(cfg, run_dir, sft_dir, start, timings, progress)
        elif env_spec.has_expert:
            start, start_label = sft_dir, "sft"
            _demos_and_sft(cfg, run_dir, demos, sft_dir, env_spec, timings, progress, stop)
        else:  # nothing to imitate: RL starts from a fresh policy, kept in init/ as the baseline to beat
            start, start_label = run_dir / "init", "init"
            print(f"[tristream] env {', '.join(env_spec.tasks) or cfg.env.name!r} has no scripted expert: no demos or SFT; RL starts from a fresh "
                  f"policy (saved in {start})")
            if not (start / "policy.safetensors").exists():
                torch.manual_seed(cfg.run.seed)
                save_policy(build_policy(cfg, env_spec), start)
        if stop():
            return {}
        t = time.perf_counter()
        print(f"[tristream] 3/4 RL: {cfg.train.steps} global steps, mode {cfg.runtime.mode}, "
              f"backend {cfg.runtime.backend}, loss {cfg.algo.loss}")
        has_ckpt = (run_dir / "checkpoints" / "latest").exists()
        rl_policy = rl_train(cfg, run_dir, env_spec, init=start, resume=resume and has_ckpt, progress=progress,
                             stop=stop)
        timings["rl_s"] = time.perf_counter() - t
        if stop():
            return {}
    t = time.perf_counter()
    print(f"[tristream] 4/4 evaluating {', '.join([*baselines, start_label])} and RL on {cfg.eval.episodes} "
          f"held-out episodes each")
    results = {label: evaluate(load_policy(path), cfg, out_dir=run_dir / "eval", label=label)
               for label, path in {**baselines, start_label: start}.items()}
    results["rl"] = evaluate(rl_policy, cfg, out_dir=run_dir / "eval", label="rl")
    timings["eval_s"] = time.perf_counter() - t
    tracker = Tracker(run_dir, tensorboard=False)
    for label, r in results.items():
        tracker.log(cfg.train.steps, {"success": r["success"], "label": label}, phase="eval")
    tracker.close()
    learning_curve(run_dir)
    timings["total_s"] = time.perf_counter() - t0
    table = format_table(results)
    summary = {"benchmark": "summary", "eval": results, "timings": timings, "meta": run_meta()}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (run_dir / "summary.md").write_text(f"# {run_dir.name}\n\n```\n{table}\n```\n")
    print("\nSuccess rate per task family on held-out seeds (95% Wilson CI):\n" + table)
    print(f"\n[tristream] done in {timings['total_s']:.0f} s; outputs in {run_dir}/ (config.yaml, metrics.jsonl, "
          "tb/, checkpoints/, learning_curve.png, eval/*.gif, summary.md)")
    return results


def format_summary(summary: dict) -> str:
    """A recipe's ``summary.json`` as ``tristream report`` prints it: the success table and the stage times."""
    t = summary.get("timings", {})
    stages = ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in t.items() if k.endswith("_s") and k != "total_s")
    timing = f"\n\nwall time {t['total_s']:.0f} s ({stages})" if "total_s" in t else ""
    return format_table(summary["eval"]) + timing
