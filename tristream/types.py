"""Records that move between roles.

A ``Segment`` is a piece of one env's trajectory: up to ``rollout.segment_len`` consecutive decision steps
(one action chunk each), ending early at an episode end. It is the unit the learner streams in. Arrays
are time-major with T decision steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class ObsBatch:
    """Observations of several envs (or time steps)."""

    images: np.ndarray  # uint8 [B, n_cams, H, W, 3]
    state: np.ndarray  # float32 [B, S]
    instruction: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.images, "state": self.state, "instruction": self.instruction}

    @staticmethod
    def stack(obs_list: list[dict[str, Any]]) -> "ObsBatch":
        return ObsBatch(
            images=np.stack([o["images"] for o in obs_list]),
            state=np.stack([o["state"] for o in obs_list]).astype(np.float32),
            instruction=[o["instruction"] for o in obs_list],
        )

    @staticmethod
    def concat(batches: list["ObsBatch"]) -> "ObsBatch":
        return ObsBatch(
            images=np.concatenate([b.images for b in batches]),
            state=np.concatenate([b.state for b in batches]),
            instruction=[s for b in batches for s in b.instruction],
        )

    def __len__(self) -> int:
        return len(self.instruction)


@dataclass
class Segment:
    """T decision steps of one env. ``bootstrap_obs`` is the observation after the last step."""

    env_id: int  # global env index
    episode_seed: int
    task: str
    obs: ObsBatch  # [T, ...]
    actions: np.ndarray  # float32 [T, K, A]
    behaviour_logp: np.ndarray  # float32 [T, L]
    values: np.ndarray  # float32 [T]
    policy_version: np.ndarray  # int64 [T]
    rewards: np.ndarray  # float32 [T], summed over the chunk's env steps
    env_steps: np.ndarray  # int64 [T], env steps each chunk actually took (< K at an episode end)
    terminated: bool  # the episode ended at the last step (no bootstrap)
    truncated: bool  # the step limit ended the episode at the last step (bootstrap from bootstrap_obs)
    bootstrap_obs: dict[str, Any]  # single obs after the last step
    episode_done: bool = False  # this segment closes its episode (terminated or truncated)
    episode_return: float = 0.0  # when episode_done: the episode's total reward
    episode_success: bool = False
    episode_length: int = 0  # env steps
    group_key: tuple = ()  # GRPO group: (global step, task, seed)
    global_step: int = 0
    rollout_end: bool = False  # the env's last segment of this global step (rollout.steps_per_env > 0)

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])
