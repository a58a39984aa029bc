"""Language-policy stages on a text env: SFT on the env's own training problems, and DPO on preference
pairs. Each saves its model both as an LM folder (``lm.json``: decode benchmark, quantized eval) and as a
policy of the env (``policy.json``: ``tristream train train.init=<folder>``)."""
from __future__ import annotations

import json
from pathlib import Path

from tristream.lm.train import save_lm, sft_lm
from tristream.policies.io import load_policy, save_policy
from tristream.envs.from_config import env_from_config


def is_text_env(env_cfg) -> bool:
    return env_cfg.name == "text" or env_cfg.name.startswith("text/")


def _text_env(cfg, stage: str):
    if not is_text_env(cfg.env):
        raise ValueError(f"{stage} of a language policy needs a text env (env.name=text or text/<domain>: tristream "
                         f"env list), got env.name={cfg.env.name!r}")
    return env_from_config(cfg.env)


def _save_policy(model, env, cfg, out_dir) -> None:
    from tristream.policies.lm import LMPolicy
    sampling = {k: v for k, v in cfg.policy.kwargs.items() if k in ("temperature", "top_p")}
    policy = LMPolicy(env.spec, model, **sampling)
    policy.registry_name = "lm"
    save_policy(policy, out_dir)


def language_sft(cfg, out_dir: str | Path, *, tracker=None, progress: bool = True):
    """``cfg.lm`` SFT on the text env's domain mix (arithmetic ``lm.task`` when the env is not a text env);
    returns the model."""
    if not is_text_env(cfg.env):
        return sft_lm(cfg, out_dir, tracker=tracker, progress=progress)
    env = env_from_config(cfg.env)
    model = sft_lm(cfg, out_dir, task=env.mix, tracker=tracker, progress=progress)
    _save_policy(model, env, cfg, out_dir)
    return model


def language_dpo(cfg, init: str | Path, out_dir: str | Path, *, pairs: str | Path | None = None, tracker=None,
                 progress: bool = True):
    """``cfg.dpo`` DPO of the language policy in ``init`` (an SFT folder) on ``pairs`` (a JSONL file; default
    ``cfg.dpo.pairs``; empty: rejection-sampled from the model and saved as ``out_dir/pairs.jsonl``).
    Writes the model, ``dpo.json`` (pairs, held-out exact match before and after, last metrics); returns it."""
    from tristream.lm.dpo import dpo_train, read_pairs, rejection_pairs, summary_line, write_pairs
    from tristream.lm.train import exact_match, heldout
    env, d, out = _text_env(cfg, "DPO"), cfg.dpo, Path(out_dir)
    if d.steps < 1:
        raise ValueError(f"DPO needs dpo.steps >= 1, got dpo.steps={d.steps} (e.g. dpo.steps=100)")
    policy = load_policy(init)
    if getattr(policy, "registry_name", None) != "lm":
        raise ValueError(f"DPO needs a language policy (policy.name=lm, e.g. tristream sft --preset lm_text); "
                         f"{init} holds a {getattr(policy, 'registry_name', type(policy).__name__)!r} policy")
    model, out_path = policy.model, pairs or d.pairs
    out.mkdir(parents=True, exist_ok=True)
    if out_path:
        pair_list = read_pairs(out_path)
        stats = {"pairs": len(pair_list), "source": str(out_path)}
        print(f"[tristream] DPO: {len(pair_list)} pairs from {out_path}")
    else:
        pair_list, stats = rejection_pairs(model, env.mix, prompts=d.prompts, samples_per_prompt=d.samples_per_prompt,
                                           max_new_tokens=env.spec.action_dim, temperature=policy.temperature,
                                           seed=cfg.run.seed)
        stats["source"] = str(write_pairs(pair_list, out / "pairs.jsonl"))
        print(f"[tristream] DPO: rejection sampling gave {summary_line(stats)} -> {stats['source']}")
    problems = heldout(env.mix, cfg.lm.eval_problems)
    before = exact_match(model, env.mix, problems)["exact_match"]
    print(f"[tristream] DPO: {d.steps} steps x {d.batch_size} pairs, beta {d.beta}, lr {d.lr}, label smoothing "
          f"{d.label_smoothing}; held-out exact match before {before:.3f}")
    model, rows = dpo_train(model, pair_list, d, seed=cfg.run.seed, tracker=tracker, progress=progress)
    after = exact_match(model, env.mix, problems)["exact_match"]
    print(f"[tristream] DPO: held-out exact match (greedy, {len(problems)} problems) {before:.3f} -> {after:.3f}")
    save_lm(model, out, cfg, extra={"stage": "dpo", "init": str(init)})
    _save_policy(model, env, cfg, out)
    (out / "dpo.json").write_text(json.dumps({"pairs": stats, "heldout_exact_match": {"before": before, "after": after},
                                              "heldout_problems": len(problems), "last": rows[-1] if rows else {},
                                              "init": str(init)}, indent=2))
    return model
