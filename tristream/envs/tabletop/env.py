"""TabletopEnv: a MuJoCo tabletop with a slide-joint gripper, coloured boxes, zones and plates.

See docs/environments.md for the task families, spaces and rewards.
"""
from __future__ import annotations

import atexit
import os
import weakref

from tristream.envs.headless_gl import set_defaults

set_defaults()  # MUJOCO_GL=egl, LP_NUM_THREADS=0, before MuJoCo loads

from typing import Any  # noqa: E402

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from tristream.envs.base import Env, EnvSpec, Obs, noisy_action  # noqa: E402
from tristream.envs.tabletop import expert as _expert  # noqa: E402
from tristream.envs.tabletop import scene  # noqa: E402
from tristream.envs.tabletop import tasks as task_lib  # noqa: E402

MAX_DELTA = 0.03  # metres of end-effector target displacement per step at |action| = 1
WORKSPACE_LO = np.array([-0.32, -0.24, 0.017])
WORKSPACE_HI = np.array([0.32, 0.24, 0.25])
MAX_LEAD = 0.05  # the position target never runs further than this ahead of the actual end effector
STATE_DIM = 8

_LIVE_ENVS: "weakref.WeakSet[TabletopEnv]" = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _ensure_headless_gl() -> None:
    """If mujoco was imported before this module without MUJOCO_GL and there is no X display, MuJoCo picked
    GLFW, which cannot work headless; switch its GL context class to EGL (what MUJOCO_GL=egl would pick)."""
    from mujoco import gl_context

    if os.environ.get("DISPLAY") or os.environ.get("MUJOCO_GL", "").lower() not in ("egl", ""):
        return
    if getattr(gl_context, "GLContext", None) is not None and gl_context.GLContext.__module__ == "mujoco.glfw":
        try:
            from mujoco.egl import GLContext as EGLContext

            gl_context.GLContext = EGLContext
        except Exception:  # pragma: no cover - leave MuJoCo's choice alone
            pass


def _close_renderers() -> None:
    # Free GL contexts while EGL is still alive, else MuJoCo's Renderer.__del__ complains at interpreter exit.
    # Registered after the first GL context exists, so it runs before mujoco.egl's own eglTerminate hook.
    for env in list(_LIVE_ENVS):
        try:
            env.close()
        except Exception:  # pragma: no cover - best effort
            pass


class TabletopEnv(Env):
    """MuJoCo tabletop manipulation with language instructions.

    Args (all keyword):
        task: a family name ("reach", "push", "pick", "place") or "mix" (the family is drawn from the seed).
        tasks: the families a "mix" draws from (default: all).
        image_size: square image side in pixels.
        max_episode_steps: step limit; reaching it without success gives truncated=True.
        control_hz: control rate (physics runs at 200 Hz, i.e. 200 / control_hz substeps per step).
        reward_shaping: if False the reward is sparse: 1.0 on the step the task is first solved (and
            terminated=True), else 0.0. If True a dense term is added each step:
            ``shaping_scale * (phi(s') - phi(s))`` with ``phi`` = minus the remaining distance in metres
            (ee->object, plus object->goal for push/place, plus the missing lift height for pick); it is
            potential-based, so it does not change the optimal policy.
        shaping_scale: weight of the dense term.
        staged_place_shaping: place's potential also counts the missing lift (box centre up to 7 cm) while the
            box is not over its plate (tasks.potential); plain distances otherwise.
        cameras: which of ("agentview", "wrist") to render, in this order in ``images``.

    Actions: float32 [4] in [-1, 1] (clipped): end-effector delta x, y, z in units of MAX_DELTA (3 cm) and
    the gripper (> 0 close, <= 0 open).
    State: float32 [8]: end-effector xyz (m), end-effector velocity xyz (m/s), finger opening (0 closed,
    1 open), last gripper command (+1 close, -1 open). No object positions: those are only in the images.
    """

    def __init__(
        self,
        *,
        task: str = "mix",
        tasks: tuple[str, ...] | list[str] | None = None,
        image_size: int = 64,
        max_episode_steps: int = 50,
        control_hz: float = 20.0,
        reward_shaping: bool = False,
        shaping_scale: float = 1.0,
        staged_place_shaping: bool = False,
        cameras: tuple[str, ...] | list[str] = ("agentview", "wrist"),
    ):
        if task == "mix":
            fams = tuple(tasks) if tasks else task_lib.FAMILIES
            if not fams:
                raise ValueError("tasks must name at least one family")
        else:
            fams = (task,)
        for f in fams:
            task_lib.validate_family(f)
        cameras = tuple(cameras)
        for c in cameras:
            if c not in ("agentview", "wrist"):
                raise ValueError(f"unknown camera {c!r}; valid cameras: agentview, wrist")
        if not cameras:
            raise ValueError("at least one camera is required")
        self.families = fams
        self.image_size = int(image_size)
        self.max_episode_steps = int(max_episode_steps)
        self.reward_shaping = bool(reward_shaping)
        self.shaping_scale = float(shaping_scale)
        self.staged_place_shaping = bool(staged_place_shaping)
        self.cameras = cameras
        self.model = mujoco.MjModel.from_xml_string(scene.build_mjcf(self.image_size))
        self.substeps = max(1, int(round(1.0 / (control_hz * self.model.opt.timestep))))
        self.data = mujoco.MjData(self.model)
        self._renderer: mujoco.Renderer | None = None
        m = self.model
        name = lambda kind, n: mujoco.mj_name2id(m, kind, n)  # noqa: E731
        self._obj_qadr = [int(m.jnt_qposadr[name(mujoco.mjtObj.mjOBJ_JOINT, f"obj{i}_joint")]) for i in range(scene.NUM_OBJECTS)]
        self._obj_geom = [name(mujoco.mjtObj.mjOBJ_GEOM, f"obj{i}") for i in range(scene.NUM_OBJECTS)]
        self._plate_geom = [name(mujoco.mjtObj.mjOBJ_GEOM, f"plate{i}") for i in range(scene.NUM_PLATES)]
        self._grip_q = [int(m.jnt_qposadr[name(mujoco.mjtObj.mjOBJ_JOINT, j)]) for j in ("grip_x", "grip_y", "grip_z")]
        self._grip_v = [int(m.jnt_dofadr[name(mujoco.mjtObj.mjOBJ_JOINT, j)]) for j in ("grip_x", "grip_y", "grip_z")]
        self._finger_q = [int(m.jnt_qposadr[name(mujoco.mjtObj.mjOBJ_JOINT, j)]) for j in ("finger_l", "finger_r")]
        self._cam_ids = [name(mujoco.mjtObj.mjOBJ_CAMERA, c) for c in cameras]
        self.spec = EnvSpec(
            action_dim=4,
            state_dim=STATE_DIM,
            camera_names=cameras,
            image_size=self.image_size,
            max_episode_steps=self.max_episode_steps,
            tasks=fams,
            has_expert=True,
            extra={"control_hz": 1.0 / (self.substeps * self.model.opt.timestep), "max_delta_m": MAX_DELTA},
        )
        self._images = np.zeros((len(cameras), self.image_size, self.image_size, 3), np.uint8)
        self.episode: task_lib.Episode | None = None
        self._target = np.zeros(3)
        self._grip_cmd = -1.0
        self._t = 0
        self._done_success = False
        self._phi = 0.0
        self._noise_rng = np.random.default_rng(0)

    # ------------------------------------------------------------------ privileged accessors
    @property
    def task(self) -> str:
        return self.episode.family if self.episode is not None else self.families[0]

    @property
    def instruction(self) -> str:
        return self.episode.instruction if self.episode is not None else ""

    def ee_pos(self) -> np.ndarray:
        return self.data.qpos[self._grip_q].copy()

    def finger_q(self) -> float:
        """Mean finger closure: 0 open .. scene.FINGER_RANGE fully closed."""
        return float(self.data.qpos[self._finger_q].mean())

    def object_pos(self, i: int | None = None) -> np.ndarray:
        i = self.episode.target if i is None else i
        a = self._obj_qadr[i]
        return self.data.qpos[a : a + 3].copy()

    def controller_target(self) -> np.ndarray:
        return self._target.copy()

    def is_success(self) -> bool:
        return task_lib.is_success(self.episode, self.ee_pos(), self.object_pos())

    # ------------------------------------------------------------------ Env API
    def reset(self, seed: int) -> Obs:
        seed = int(seed)
        ep = task_lib.sample_episode(seed, self.families)
        self.episode = ep
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        for i in range(scene.NUM_OBJECTS):
            a = self._obj_qadr[i]
            d.qpos[a : a + 3] = ep.obj_pos[i]
            yaw = ep.obj_yaw[i]
            d.qpos[a + 3 : a + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
            m.geom_rgba[self._obj_geom[i]] = task_lib.PALETTE[ep.colours[i]]
        for i in range(scene.NUM_PLATES):
            m.geom_pos[self._plate_geom[i], :2] = ep.plate_pos[i]
            m.geom_rgba[self._plate_geom[i]] = task_lib.PALETTE[ep.plate_colours[i]]
        d.qpos[self._grip_q] = ep.gripper_start
        d.qpos[self._finger_q] = 0.0
        self._target = ep.gripper_start.copy()
        self._grip_cmd = -1.0
        self._apply_ctrl()
        mujoco.mj_forward(m, d)
        # let the boxes settle on the table (a few physics steps, same for every seed)
        mujoco.mj_step(m, d, nstep=4)
        self._t = 0
        self._done_success = False
        self._phi = task_lib.potential(ep, self.ee_pos(), self.object_pos(), self.staged_place_shaping)
        self._noise_rng = np.random.default_rng([seed, 7919])
        return self._obs()

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        if self.episode is None:
            raise RuntimeError("call reset(seed) before step()")
        a = np.nan_to_num(np.asarray(action, dtype=np.float64).reshape(-1)[:4], nan=0.0)
        if a.shape[0] < 4:
            raise ValueError(f"TabletopEnv expects actions of shape [4], got {np.shape(action)}")
        a = np.clip(a, -1.0, 1.0)
        ee = self.ee_pos()
        self._target = np.clip(self._target + a[:3] * MAX_DELTA, WORKSPACE_LO, WORKSPACE_HI)
        self._target = np.clip(self._target, ee - MAX_LEAD, ee + MAX_LEAD)
        self._grip_cmd = 1.0 if a[3] > 0 else -1.0
        self._apply_ctrl()
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)
        self._t += 1

        ee, obj = self.ee_pos(), self.object_pos()
        success = task_lib.is_success(self.episode, ee, obj)
        reward = 0.0
        terminated = False
        if success and not self._done_success:
            reward = 1.0
            terminated = True
            self._done_success = True
        if self.reward_shaping:
            phi = task_lib.potential(self.episode, ee, obj, self.staged_place_shaping)
            reward += self.shaping_scale * (phi - self._phi)
            self._phi = phi
        truncated = (not terminated) and self._t >= self.max_episode_steps
        info = {"success": bool(success or self._done_success), "task": self.episode.family}
        return self._obs(), float(reward), terminated, truncated, info

    def expert_action(self, noise: float = 0.0) -> np.ndarray:
        return noisy_action(_expert.expert_action(self), noise, self._noise_rng)

    def render(self) -> np.ndarray:
        """All cameras, uint8 [n_cams, H, W, 3] (a copy)."""
        return self._render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ internals
    def _apply_ctrl(self) -> None:
        self.data.ctrl[0:3] = self._target
        fc = scene.FINGER_RANGE if self._grip_cmd > 0 else 0.0
        self.data.ctrl[3] = fc
        self.data.ctrl[4] = fc

    def _render(self) -> np.ndarray:
        if self._renderer is None:
            _ensure_headless_gl()
            self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
            _LIVE_ENVS.add(self)
            global _ATEXIT_REGISTERED
            if not _ATEXIT_REGISTERED:
                atexit.register(_close_renderers)
                _ATEXIT_REGISTERED = True
        r = self._renderer
        for k, cam in enumerate(self._cam_ids):
            r.update_scene(self.data, camera=cam)
            r.render(out=self._images[k])
        return self._images

    def _state(self) -> np.ndarray:
        d = self.data
        opening = 1.0 - self.finger_q() / scene.FINGER_RANGE
        s = np.empty(STATE_DIM, np.float32)
        s[0:3] = d.qpos[self._grip_q]
        s[3:6] = d.qvel[self._grip_v]
        s[6] = opening
        s[7] = self._grip_cmd
        return s

    def _obs(self) -> Obs:
        return {"images": self._render().copy(), "state": self._state(), "instruction": self.episode.instruction}
