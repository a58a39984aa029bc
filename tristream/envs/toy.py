"""ToyEnv: a pure-numpy 2-D "go to the coloured target" task (no MuJoCo, no OpenGL).

A point lives in the square [-1, 1]^2 with ``num_targets`` coloured square targets. The instruction names one
colour ("go to the {colour} target"); the episode succeeds (reward 1.0, terminated=True) when the point is
within ``success_radius`` of that target; ``max_episode_steps`` without success gives truncated=True.

Observations: images uint8 [n_cams, S, S, 3] drawn with numpy (dark background, targets as coloured squares,
the point as a white square; every camera renders the same top view), state float32 [2] = the point's
position, instruction str.
Actions: float32 [action_dim] in [-1, 1] (clipped); the first two entries move the point by up to
``step_size`` in x and y, further entries (``action_dim`` > 2, e.g. 4 to match TabletopEnv) are ignored.
Image row 0 is the top of the picture (y = +1); column 0 is x = -1.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from tristream.envs.base import Env, EnvSpec, Obs

TOY_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 70, 230),
    "yellow": (240, 215, 30),
    "purple": (140, 40, 190),
}


class ToyEnv(Env):
    def __init__(
        self,
        *,
        image_size: int = 16,
        num_targets: int = 3,
        max_episode_steps: int = 20,
        action_dim: int = 2,
        step_size: float = 0.25,
        success_radius: float = 0.2,
        cameras: tuple[str, ...] | list[str] = ("top",),
        reward_shaping: bool = False,
        **_ignored: Any,
    ):
        if not 1 <= num_targets <= len(TOY_COLOURS):
            raise ValueError(f"num_targets must be in 1..{len(TOY_COLOURS)}")
        if action_dim < 2:
            raise ValueError("action_dim must be >= 2")
        if image_size < 8:
            raise ValueError("image_size must be >= 8")
        self.image_size = int(image_size)
        self.num_targets = int(num_targets)
        self.max_episode_steps = int(max_episode_steps)
        self.step_size = float(step_size)
        self.success_radius = float(success_radius)
        self.reward_shaping = bool(reward_shaping)
        self.spec = EnvSpec(
            action_dim=int(action_dim),
            state_dim=2,
            camera_names=tuple(cameras),
            image_size=self.image_size,
            max_episode_steps=self.max_episode_steps,
            tasks=("goto",),
            has_expert=True,
        )
        self._pos = np.zeros(2)
        self._targets = np.zeros((num_targets, 2))
        self._colours: list[str] = []
        self._goal = 0
        self._t = 0
        self._done_success = False
        self._instruction = ""
        self._noise_rng = np.random.default_rng(0)
        self._background = np.zeros((self.image_size, self.image_size, 3), np.uint8)

    @property
    def task(self) -> str:
        return "goto"

    def reset(self, seed: int) -> Obs:
        rng = np.random.default_rng(int(seed))
        names = list(TOY_COLOURS)
        self._colours = [names[i] for i in rng.choice(len(names), self.num_targets, replace=False)]
        targets: list[np.ndarray] = []
        while len(targets) < self.num_targets:
            p = rng.uniform(-0.8, 0.8, size=2)
            if all(np.linalg.norm(p - q) > 0.5 for q in targets):
                targets.append(p)
        self._targets = np.stack(targets)
        self._goal = int(rng.integers(self.num_targets))
        while True:
            p = rng.uniform(-0.9, 0.9, size=2)
            if np.linalg.norm(p - self._targets[self._goal]) > 0.6:
                break
        self._pos = p
        self._t = 0
        self._done_success = False
        self._instruction = f"go to the {self._colours[self._goal]} target"
        self._noise_rng = np.random.default_rng([int(seed), 7919])
        # static part of the picture
        bg = np.full((self.image_size, self.image_size, 3), 30, np.uint8)
        for k in range(self.num_targets):
            self._draw(bg, self._targets[k], TOY_COLOURS[self._colours[k]], radius=max(1, self.image_size // 10))
        self._background = bg
        return self._obs()

    def _pixel(self, p: np.ndarray) -> tuple[int, int]:
        s = self.image_size
        col = int(np.clip((p[0] + 1) / 2 * s, 0, s - 1))
        row = int(np.clip((1 - p[1]) / 2 * s, 0, s - 1))
        return row, col

    def _draw(self, img: np.ndarray, p: np.ndarray, rgb, radius: int) -> None:
        r, c = self._pixel(p)
        img[max(0, r - radius) : r + radius + 1, max(0, c - radius) : c + radius + 1] = rgb

    def _dist(self) -> float:
        return float(np.linalg.norm(self._pos - self._targets[self._goal]))

    def _obs(self) -> Obs:
        img = self._background.copy()
        self._draw(img, self._pos, (255, 255, 255), radius=max(0, self.image_size // 16))
        images = np.broadcast_to(img, (self.spec.num_cameras, *img.shape)).copy()
        return {"images": images, "state": self._pos.astype(np.float32), "instruction": self._instruction}

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        a = np.clip(np.nan_to_num(np.asarray(action, dtype=np.float64).reshape(-1)[:2]), -1.0, 1.0)
        d0 = self._dist()
        self._pos = np.clip(self._pos + a * self.step_size, -1.0, 1.0)
        self._t += 1
        success = self._dist() < self.success_radius
        reward, terminated = 0.0, False
        if success and not self._done_success:
            reward, terminated, self._done_success = 1.0, True, True
        if self.reward_shaping:
            reward += 0.1 * (d0 - self._dist())
        truncated = (not terminated) and self._t >= self.max_episode_steps
        return self._obs(), float(reward), terminated, truncated, {"success": bool(success or self._done_success), "task": "goto"}

    def expert_action(self, noise: float = 0.0) -> np.ndarray:
        a = np.zeros(self.spec.action_dim)
        a[:2] = np.clip((self._targets[self._goal] - self._pos) / self.step_size, -1.0, 1.0)
        if noise > 0:
            a[:2] += self._noise_rng.normal(0.0, noise, size=2)
        return np.clip(a, -1.0, 1.0).astype(np.float32)
