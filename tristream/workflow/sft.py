"""``tristream sft``: behaviour cloning of the policy on demonstration chunks."""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tristream.data import DemoDataset
from tristream.policies.io import save_policy
from tristream.policies.from_config import build_policy


def sft(cfg, dataset: str | Path | list, out_dir: str | Path, env_spec, *, tracker=None, progress: bool = True,
        policy=None):
    """Train ``cfg.sft.steps`` BC steps on ``dataset`` and save the policy to ``out_dir``; returns it."""
    s = cfg.sft
    ds = DemoDataset(dataset, camera_names=env_spec.camera_names, flip_vertical=s.flip_vertical)
    if any(ds.flipped.values()):
        print(f"[tristream] {ds!r}")  # say when bottom-up LIBERO/robomimic frames were turned right way up
    data = ds.chunk_samples(cfg.policy.chunk_len)
    n = len(data["actions"])
    torch.manual_seed(cfg.run.seed)
    policy = policy if policy is not None else build_policy(cfg, env_spec)
    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    # Cosine decay to 10% of the learning rate: the last steps polish instead of bouncing.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i, s.steps) / max(s.steps, 1))))
    rng = np.random.default_rng(cfg.run.seed)
    actions = torch.from_numpy(data["actions"])
    mask = torch.from_numpy(data["mask"])
    bar = tqdm(range(s.steps), desc="sft", unit="step", disable=not progress)
    t0, running = time.perf_counter(), None
    for step in bar:
        idx = rng.integers(0, n, size=s.batch_size)
        obs = {"images": data["images"][idx], "state": data["state"][idx],
               "instruction": [str(x) for x in data["instruction"][idx]]}
        policy.observe(obs)
        loss = policy.bc_loss(obs, actions[idx], mask[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        sched.step()
        value = loss.item()
        running = value if running is None else 0.95 * running + 0.05 * value
        if (step + 1) % s.log_every == 0 or step + 1 == s.steps:
            bar.set_postfix(loss=f"{running:.4f}")
            if tracker is not None:
                tracker.log(step + 1, {"bc_loss": running, "lr": sched.get_last_lr()[0],
                                       "samples_per_s": (step + 1) * s.batch_size / (time.perf_counter() - t0)},
                            phase="sft")
    policy.eval()
    save_policy(policy, out_dir, extra={"dataset": [str(p) for p in np.atleast_1d(np.array(dataset, dtype=object))],
                                        "sft_steps": s.steps, "demo_samples": n, "demo_flipped": ds.flipped})
    return policy
