"""MetaWorldEnv: Meta-World v3 tasks (Sawyer arm, MuJoCo) behind tristream's Env interface.

See docs/environments.md ("Meta-World") for tasks, spaces, rendering and the episode protocol.
"""
from __future__ import annotations

import atexit
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from tristream.envs.headless_gl import set_defaults

set_defaults()  # MUJOCO_GL=egl, LP_NUM_THREADS=0, before MuJoCo loads

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from tristream.envs.base import Env, EnvSpec, Obs, noisy_action  # noqa: E402
from tristream.envs.extras import require  # noqa: E402
from tristream.envs.metaworld import tasks as task_lib  # noqa: E402
from tristream.envs.tabletop.env import _ensure_headless_gl  # noqa: E402

require("metaworld", "metaworld", "the Meta-World envs")
from metaworld.env_dict import ALL_V3_ENVIRONMENTS  # noqa: E402
from metaworld.policies import ENV_POLICY_MAP  # noqa: E402

CAMERAS: tuple[str, ...] = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
PROPRIO_DIM = 8
FULL_STATE_DIM = 39
# Render options off on every scene: shadows, reflections (the table and floor are mirrors: +40% frames/s
# without), the skybox (+15%). Measured on llvmpipe, one 64x64 camera: 68 -> 120 frames/s.
_RENDER_OFF = (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX)

_LIVE_ENVS: "weakref.WeakSet[MetaWorldEnv]" = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _close_live_envs() -> None:
    # Free GL contexts while EGL is still alive (registered after the first context, so it runs first).
    for env in list(_LIVE_ENVS):
        try:
            env.close()
        except Exception:  # pragma: no cover - best effort
            pass


@dataclass
class _TaskSim:
    """One Meta-World env (its own MuJoCo model) with its renderer and scripted policy."""

    env: Any
    renderer: mujoco.Renderer | None
    cam_ids: list[int]
    rotate: list[bool]  # per camera: the picture comes out upside down and is turned by 180 degrees
    expert: Any


class MetaWorldEnv(Env):
    """Meta-World v3 with images, a language instruction, proprio state and the benchmark's success flag.

    Args (all keyword):
        task: one task id ("reach-v3" or "reach") or a set ("mt10", "mt50").
        tasks: a list of task ids / sets instead of ``task`` (both empty: MT50).
        image_size: square image side in pixels.
        max_episode_steps: step limit; reaching it without success gives truncated=True.
        reward_shaping: False: reward 1.0 on the first successful step (terminated=True), else 0.0.
            True: a dense term is added every step, as ``shaping`` says.
        shaping: "progress" (default): ``shaping_scale * (phi(s') - phi(s))`` with phi = Meta-World's dense
            reward / 10 (in 0..1), potential-based like tabletop's term: an episode's shaping sums to
            phi(last) - phi(first), so succeeding early is never worth less than failing slowly.
            "dense": Meta-World's dense reward / 10 itself, every step. Not potential-based, and with the
            episode ending at success it pays failures that run to the step limit more (about 6 vs 1 on
            button-press-v3, measured): RL on it learns to avoid success.
        shaping_scale: weight of the dense term.
        cameras: names from CAMERAS, in this order in ``images``.
        state: "proprio" (float32 [8]: hand xyz, hand velocity xyz, gripper opening 0..1, last gripper
            command) or "full" (Meta-World's float32 [39] observation with object and goal positions).
        max_cached_tasks: task sims kept alive per instance (a mix builds one per task on first use).

    Episode protocol: ``reset(seed)`` runs task ``tasks[seed % len(tasks)]`` with object and goal positions
    drawn by Meta-World's own sampler from a generator seeded with ``seed`` (Meta-World's
    ``seeded_rand_vec`` mode), so consecutive seeds cover the tasks evenly and every episode is
    reproducible. Actions: float32 [4] in [-1, 1]: hand delta xyz (1 cm per unit) and gripper effort.
    """

    def __init__(
        self,
        *,
        task: str | None = None,
        tasks: tuple[str, ...] | list[str] | None = None,
        image_size: int = 64,
        max_episode_steps: int = 200,
        reward_shaping: bool = False,
        shaping: str = "progress",
        shaping_scale: float = 1.0,
        cameras: tuple[str, ...] | list[str] = ("corner", "gripperPOV"),
        state: str = "proprio",
        max_cached_tasks: int = 10,
    ):
        self.tasks = task_lib.resolve_tasks(task, tasks)
        cameras = tuple(cameras)
        if not cameras:
            raise ValueError("at least one camera is required")
        for c in cameras:
            if c not in CAMERAS:
                raise ValueError(f"unknown Meta-World camera {c!r}; valid cameras: {', '.join(CAMERAS)}")
        if shaping not in ("progress", "dense"):
            raise ValueError(f"shaping must be 'progress' or 'dense', got {shaping!r}")
        if state not in ("proprio", "full"):
            raise ValueError(f"state must be 'proprio' or 'full', got {state!r}")
        self.cameras = cameras
        self.image_size = int(image_size)
        self.max_episode_steps = int(max_episode_steps)
        self.reward_shaping = bool(reward_shaping)
        self.shaping = shaping
        self.shaping_scale = float(shaping_scale)
        self._phi = 0.0  # the last state's potential (shaping="progress")
        self.state_mode = state
        self.max_cached_tasks = max(1, int(max_cached_tasks))
        self._sims: "OrderedDict[str, _TaskSim]" = OrderedDict()
        self._task = self.tasks[0]
        self._sim: _TaskSim | None = None
        self._raw = np.zeros(FULL_STATE_DIM)
        self._grip_cmd = 0.0
        self._t = 0
        self._done_success = False
        self._noise_rng = np.random.default_rng(0)
        self._images = np.zeros((len(cameras), self.image_size, self.image_size, 3), np.uint8)
        self._frame = np.zeros((self.image_size, self.image_size, 3), np.uint8)
        expert = {"has_expert": True} if "has_expert" in EnvSpec.__dataclass_fields__ else {}
        self.spec = EnvSpec(
            action_dim=4,
            state_dim=PROPRIO_DIM if state == "proprio" else FULL_STATE_DIM,
            camera_names=cameras,
            image_size=self.image_size,
            max_episode_steps=self.max_episode_steps,
            tasks=self.tasks,
            extra={"suite": "metaworld", "control_hz": 80.0},
            **expert,
        )

    # ------------------------------------------------------------------ accessors
    @property
    def task(self) -> str:
        return self._task

    @property
    def instruction(self) -> str:
        return task_lib.INSTRUCTIONS[self._task]

    @property
    def raw_env(self):
        """The current task's Meta-World env (privileged access for tests and experts)."""
        return self._get_sim(self._task).env

    # ------------------------------------------------------------------ Env API
    def reset(self, seed: int) -> Obs:
        seed = int(seed)
        self._task = self.tasks[seed % len(self.tasks)]
        self._sim = sim = self._get_sim(self._task)
        sim.env.seed(seed)
        obs, _ = sim.env.reset()
        self._raw = np.asarray(obs, np.float64)
        self._grip_cmd = 0.0
        self._t = 0
        self._done_success = False
        self._noise_rng = np.random.default_rng([seed, 7919])
        if self.reward_shaping and self.shaping == "progress":
            # Meta-World scores states only inside step(); its evaluate_state gives the initial one's score
            # (a zero action: the rewards that read the action use it for the gripper, idle at reset)
            self._phi = float(sim.env.evaluate_state(obs, np.zeros(4))[0]) / 10.0
        return self._obs()

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        if self._sim is None:
            raise RuntimeError("call reset(seed) before step()")
        a = np.nan_to_num(np.asarray(action, dtype=np.float64).reshape(-1), nan=0.0)
        if a.shape[0] < 4:
            raise ValueError(f"MetaWorldEnv expects actions of shape [4], got {np.shape(action)}")
        a = np.clip(a[:4], -1.0, 1.0)
        obs, dense, _, _, mw_info = self._sim.env.step(a)
        self._raw = np.asarray(obs, np.float64)
        self._grip_cmd = float(a[3])
        self._t += 1
        success = bool(mw_info.get("success", 0.0))
        reward, terminated = 0.0, False
        if success and not self._done_success:
            reward, terminated, self._done_success = 1.0, True, True
        if self.reward_shaping and self.shaping == "dense":
            reward += self.shaping_scale * float(dense) / 10.0
        elif self.reward_shaping:
            phi = float(dense) / 10.0
            reward += self.shaping_scale * (phi - self._phi)
            self._phi = phi
        truncated = (not terminated) and self._t >= self.max_episode_steps
        info = {"success": bool(success or self._done_success), "task": self._task}
        return self._obs(), float(reward), terminated, truncated, info

    def expert_action(self, noise: float = 0.0) -> np.ndarray:
        """Meta-World's scripted policy for the task (it reads the full observation, goal included)."""
        if self._sim is None:
            raise RuntimeError("call reset(seed) before expert_action()")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Constant(s) may be too high": the env clips anyway
            a = self._sim.expert.get_action(self._raw)
        return noisy_action(a, noise, self._noise_rng)

    def render(self) -> np.ndarray:
        """All cameras, uint8 [n_cams, H, W, 3] (a copy)."""
        return self._render().copy()

    def close(self) -> None:
        for sim in self._sims.values():
            self._close_sim(sim)
        self._sims.clear()
        self._sim = None

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ internals
    def _get_sim(self, task: str) -> _TaskSim:
        if task in self._sims:
            self._sims.move_to_end(task)
            return self._sims[task]
        while len(self._sims) >= self.max_cached_tasks:
            _, old = self._sims.popitem(last=False)
            self._close_sim(old)
        env = ALL_V3_ENVIRONMENTS[task]()
        # Goal-observable, freshly randomised per reset from env.np_random (what MT benchmarks observe; the
        # scripted policies read the goal from the observation).
        env._partially_observable = False
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env._set_task_called = True
        env.__dict__.pop("sawyer_observation_space", None)  # a cached property that depends on the above
        env.max_path_length = 10**9  # tristream truncates; Meta-World would raise past its own limit
        m = env.model
        m.vis.quality.shadowsize = 0
        m.vis.quality.offsamples = 0
        m.vis.global_.offwidth = max(m.vis.global_.offwidth, self.image_size)
        m.vis.global_.offheight = max(m.vis.global_.offheight, self.image_size)
        cam_ids = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, c) for c in self.cameras]
        env.seed(0)
        env.reset()
        # Meta-World's corner cameras are defined with their up axis pointing down (the pictures come out
        # upside down); turn each camera whose up axis points below the horizon at the start pose by 180
        # degrees (a rotation, not a mirror: left stays left). Decided once per camera, never mid-episode.
        rotate = [bool(env.data.cam_xmat[c].reshape(3, 3)[2, 1] < 0) for c in cam_ids]
        sim = _TaskSim(env=env, renderer=None, cam_ids=cam_ids, rotate=rotate, expert=ENV_POLICY_MAP[task]())
        self._sims[task] = sim
        return sim

    @staticmethod
    def _close_sim(sim: _TaskSim) -> None:
        if sim.renderer is not None:
            sim.renderer.close()
            sim.renderer = None
        sim.env.close()

    def _render(self) -> np.ndarray:
        sim = self._sim
        if sim.renderer is None:
            _ensure_headless_gl()
            sim.renderer = mujoco.Renderer(sim.env.model, self.image_size, self.image_size)
            for flag in _RENDER_OFF:
                sim.renderer.scene.flags[flag] = 0
            _LIVE_ENVS.add(self)
            global _ATEXIT_REGISTERED
            if not _ATEXIT_REGISTERED:
                atexit.register(_close_live_envs)
                _ATEXIT_REGISTERED = True
        r = sim.renderer
        for k, (cam, rot) in enumerate(zip(sim.cam_ids, sim.rotate)):
            r.update_scene(sim.env.data, camera=cam)
            if rot:
                r.render(out=self._frame)
                self._images[k] = self._frame[::-1, ::-1]
            else:
                r.render(out=self._images[k])
        return self._images

    def _state(self) -> np.ndarray:
        if self.state_mode == "full":
            return self._raw.astype(np.float32)
        # Meta-World's observation stacks the current and the previous frame: hand xyz at [0:3] and [18:21].
        dt = self._sim.env.frame_skip * self._sim.env.model.opt.timestep
        s = np.empty(PROPRIO_DIM, np.float32)
        s[0:3] = self._raw[0:3]
        s[3:6] = (self._raw[0:3] - self._raw[18:21]) / dt
        s[6] = self._raw[3]
        s[7] = self._grip_cmd
        return s

    def _obs(self) -> Obs:
        return {"images": self._render().copy(), "state": self._state(), "instruction": self.instruction}
