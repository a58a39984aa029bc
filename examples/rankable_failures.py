"""How many of a policy's failures can GRPO see? Per held-out seed: one episode with deterministic (mean)
actions and K with sampled actions. A deterministic failure is *rankable* when at least one of its K sampled
episodes succeeds: a GRPO group on that seed then holds successes and failures to compare. Failures no
sampled episode turns into a success give the success reward nothing to rank (docs/benchmarks.md, "How
much of the SFT policy's failure a GRPO group can see").

    python examples/rankable_failures.py runs/default/sft --preset mix4 --seeds 60 --samples 4
    python examples/rankable_failures.py runs/mw/sft10 --seeds 40 env.name=metaworld/button-press-v3 \\
        env.max_episode_steps=100 env.image_size=64 "env.kwargs.cameras=[corner]"

The tabletop families of `env.tasks` (empty: all four; the default preset: push) are probed one by one
(`env.tasks=[<family>]`, same held-out seeds for each); `--preset mix4` probes all four.
Single process, one torch thread; episodes run one at a time.
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from tristream.config.scoped import load_cli_config
from tristream.policies.io import load_policy
from tristream.envs.from_config import env_from_config
from tristream.types import ObsBatch


def run_episode(env, policy, seed: int, deterministic: bool) -> bool:
    """One episode from ``seed``; True on success."""
    obs, done, success = env.reset(seed=seed), False, False
    while not done:
        with torch.no_grad():
            chunk = policy.act(ObsBatch.stack([obs]).as_dict(), deterministic=deterministic).actions.numpy()[0]
        for action in chunk:
            obs, _, terminated, truncated, info = env.step(action)
            success, done = bool(info.get("success", False)), terminated or truncated
            if done:
                break
    return success


def summarise(outcomes: list[tuple[bool, int]], samples: int) -> dict[str, int]:
    """outcomes: (deterministic success, sampled successes out of ``samples``) per seed."""
    failures = [s for det, s in outcomes if not det]
    return {"seeds": len(outcomes), "deterministic": sum(det for det, _ in outcomes),
            "sampled": sum(s for _, s in outcomes), "sampled_of": samples * len(outcomes),
            "failures": len(failures), "rankable": sum(s > 0 for s in failures),
            "mixed": sum(0 < s < samples for _, s in outcomes)}


def main(argv=None) -> dict[str, dict[str, int]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("policy", help="a policy folder (sft/, checkpoints/step_N/)")
    ap.add_argument("--seeds", type=int, default=60, help="held-out seeds per task (from eval.seed_offset)")
    ap.add_argument("--samples", type=int, default=4, help="sampled-action episodes per seed (a GRPO group)")
    ap.add_argument("--preset", default="default")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. env.name=metaworld/button-press-v3")
    args = ap.parse_intermixed_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg, _ = load_cli_config(args.preset, args.overrides)
    policy = load_policy(args.policy).eval()
    if cfg.env.name == "tabletop":
        from tristream.envs.tabletop import FAMILIES
        tasks = {f: dataclasses.replace(cfg.env, tasks=[f]) for f in cfg.env.tasks or FAMILIES}
    else:
        tasks = {cfg.env.name: cfg.env}
    seeds = range(cfg.eval.seed_offset, cfg.eval.seed_offset + args.seeds)
    results = {}
    print(f"{args.policy}: {args.seeds} held-out seeds per task, 1 deterministic + {args.samples} sampled episodes each")
    for name, env_cfg in tasks.items():
        env = env_from_config(env_cfg)
        outcomes = [(run_episode(env, policy, s, True), sum(run_episode(env, policy, s, False)
                                                            for _ in range(args.samples))) for s in seeds]
        env.close()
        r = results[name] = summarise(outcomes, args.samples)
        print(f"{name:28s} deterministic {r['deterministic']}/{r['seeds']}, sampled {r['sampled']}/{r['sampled_of']}; "
              f"deterministic failures {r['failures']}, rankable {r['rankable']}; mixed groups {r['mixed']}/{r['seeds']}",
              flush=True)
    return results


if __name__ == "__main__":
    main()
