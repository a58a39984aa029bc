"""``tristream collect``: scripted-expert demonstrations into a robomimic/LIBERO-layout HDF5 file.

The expert's clean action is the label; a noisy version of it is what the env executes (DART-style), so
the demonstrations visit the states a slightly-off policy reaches and show how to recover from them.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tristream.data import DemoWriter
from tristream.envs.from_config import env_from_config, env_kwargs

DEMO_SEED_BASE = 9_500_000  # below the held-out eval seeds (>= 10**7), apart from RL's rollout seeds


def _collect_episode(env, seed: int, noise: float, rng: np.random.Generator) -> dict[str, Any]:
    obs = env.reset(seed=seed)
    instruction = obs["instruction"]
    images, states, actions, rewards, dones = [], [], [], [], []
    success = False
    while True:
        label = env.expert_action(0.0)
        executed = np.clip(label + rng.normal(0.0, noise, size=label.shape), -1, 1) if noise else label
        images.append(obs["images"])
        states.append(obs["state"])
        actions.append(label)
        obs, r, terminated, truncated, info = env.step(executed.astype(np.float32))
        rewards.append(r)
        dones.append(terminated or truncated)
        success = bool(info.get("success", False))
        if terminated or truncated:
            break
    return {"images": np.stack(images), "states": np.stack(states), "actions": np.stack(actions).astype(np.float32),
            "rewards": np.array(rewards, np.float32), "dones": np.array(dones, np.uint8),
            "instruction": instruction, "task": env.task,
            "success": success}


def _worker(args) -> list[dict[str, Any]]:
    env_cfg, seeds, noise, worker_seed = args
    env = env_from_config(env_cfg)
    rng = np.random.default_rng(worker_seed)
    out = [_collect_episode(env, s, noise, rng) for s in seeds]
    env.close()
    return out


def collect(cfg, out_path: str | Path, progress: bool = True) -> dict[str, float]:
    """Record ``cfg.collect.episodes`` expert episodes (successful ones unless keep_failures) to ``out_path``,
    of the task families ``cfg.collect.tasks`` (empty: ``cfg.env.tasks``)."""
    c = cfg.collect
    env_cfg = dataclasses.replace(cfg.env, tasks=list(c.tasks)) if c.tasks else cfg.env
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    batch = 8
    kept, tried, successes = 0, 0, 0
    next_seed = DEMO_SEED_BASE + cfg.run.seed * 100_000
    probe = env_from_config(env_cfg)
    cameras = probe.spec.camera_names
    probe.close()
    ctx = mp.get_context("spawn")
    bar = tqdm(total=c.episodes, desc="collect", unit="ep", disable=not progress)
    with DemoWriter(out_path, env_args={"env": env_cfg.name, "kwargs": env_kwargs(env_cfg)}) as writer, \
            ctx.Pool(c.workers) as pool:
        while kept < c.episodes:
            need = c.episodes - kept
            jobs = []
            for w in range(c.workers):
                n = min(batch, max(1, -(-need // c.workers)))
                jobs.append((env_cfg, list(range(next_seed, next_seed + n)), c.expert_noise, next_seed))
                next_seed += n
            for episodes in pool.map(_worker, jobs):
                for ep in episodes:
                    tried += 1
                    successes += ep["success"]
                    if (ep["success"] or c.keep_failures) and kept < c.episodes:
                        writer.add_episode(ep["images"], ep["states"], ep["actions"], ep["rewards"], ep["dones"],
                                           instruction=ep["instruction"], task=ep["task"],
                                           camera_names=cameras)
                        kept += 1
                        bar.update(1)
            if tried > 20 and successes / tried < 0.2:
                raise RuntimeError(f"the expert succeeds in only {successes}/{tried} episodes at "
                                   f"collect.expert_noise={c.expert_noise}; lower the noise")
    bar.close()
    return {"episodes": kept, "tried": tried, "expert_success": successes / max(tried, 1)}

