"""SFT of a language policy on a text env: the env's own training problems as SFT data, the result saved
both as an LM folder (``lm.json``: decode benchmark, quantized eval) and as a policy of the env
(``policy.json``: ``tristream train train.init=<folder>``)."""
from __future__ import annotations

from pathlib import Path

from tristream.lm.train import sft_lm
from tristream.policies.io import save_policy
from tristream.runtime.roles import make_env


def is_text_env(env_cfg) -> bool:
    return env_cfg.name == "text" or env_cfg.name.startswith("text/")


def language_sft(cfg, out_dir: str | Path, *, tracker=None, progress: bool = True):
    """``cfg.lm`` SFT on the text env's domain mix (arithmetic ``lm.task`` when the env is not a text env);
    returns the model."""
    if not is_text_env(cfg.env):
        return sft_lm(cfg, out_dir, tracker=tracker, progress=progress)
    from tristream.policies.lm import LMPolicy
    env = make_env(cfg.env)
    model = sft_lm(cfg, out_dir, task=env.mix, tracker=tracker, progress=progress)
    sampling = {k: v for k, v in cfg.policy.kwargs.items() if k in ("temperature", "top_p")}
    policy = LMPolicy(env.spec, model, **sampling)
    policy.registry_name = "lm"
    save_policy(policy, out_dir)
    return model
