"""The single-environment interface every tristream env implements.

Observations are dicts with three keys, the same for every env:
    images:      uint8 [n_cameras, H, W, 3], right way up (row 0 is the top of the picture)
    state:       float32 [state_dim], proprioception
    instruction: str, the task's language instruction

Actions are float32 [action_dim] in [-1, 1]. ``step`` keeps ``terminated`` (the task ended: success or
failure that no more steps can undo) apart from ``truncated`` (the step limit ran out; learners bootstrap
there). ``info`` always carries ``success`` (bool) and ``task`` (str, the task family).
Vectorisation, auto-reset and action chunking live in the runtime, not in the env.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Obs = dict[str, Any]


@dataclass(frozen=True)
class EnvSpec:
    """Static facts about an env that the policy and the runtime are built from."""

    action_dim: int
    state_dim: int
    camera_names: tuple[str, ...]
    image_size: int  # square images of image_size x image_size pixels
    max_episode_steps: int
    tasks: tuple[str, ...] = ()  # task families this env may sample; their names label eval tables
    has_expert: bool = False  # implements expert_action, so the recipe can collect demos and run SFT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_cameras(self) -> int:
        return len(self.camera_names)


class Env:
    """Base class; subclasses set ``self.spec`` and implement reset/step."""

    spec: EnvSpec

    def reset(self, seed: int) -> Obs:
        """Start an episode. The whole episode (task, colours, positions) is a function of ``seed``."""
        raise NotImplementedError

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        """Apply one action; returns (obs, reward, terminated, truncated, info)."""
        raise NotImplementedError

    def expert_action(self, noise: float = 0.0) -> np.ndarray:
        """A scripted expert's action for the current state (envs that have one)."""
        raise NotImplementedError(f"{type(self).__name__} has no scripted expert")

    @property
    def task(self) -> str:
        """The task family of the current episode."""
        return self.spec.tasks[0] if self.spec.tasks else "default"

    def close(self) -> None:
        pass


def noisy_action(action: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """An expert's action with Gaussian noise of std ``noise`` (0: none), clipped to [-1, 1], float32."""
    a = np.asarray(action, dtype=np.float64)
    if noise > 0:
        a = a + rng.normal(0.0, noise, size=a.shape)
    return np.clip(a, -1.0, 1.0).astype(np.float32)
