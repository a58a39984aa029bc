"""A plain Gymnasium env with pixel observations, written without any tristream import.

A puck slides on a table (two slide joints driven by velocity actuators); it must reach a red target.
Both start at random positions, so the policy has to find them in the top-down camera image.

    obs_mode="pixels": observation Box(0, 255, (64, 64, 3), uint8), the camera image only
    obs_mode="dict":   Dict(pixels: uint8 (3, 64, 64) channels first, puck: float32 (2,), instruction: Text)
    obs_mode="state":  Box(-0.5, 0.5, (4,), float32): puck and target positions, no image (does a policy learn the
                       task when it need not find them in the picture?)
    action:            Box(-1, 1, (2,)), the puck's velocity command
    reward:            reward="progress" (default): the decrease of the puck-target distance each step (x10), +1
                       on reaching the target; reward="distance": minus the distance in metres each step, the
                       plain dense reward a new env often has (returns of about -10 over 40 steps)
    info["is_success"] True once the puck is within 5 cm of the target (with reward="progress" the episode then
                       terminates; with "distance" it runs to the step limit)

Train it with tristream (see docs/extending.md):

    tristream train env.name=gym env.gym.id=examples.pixel_reach:PixelReachEnv
"""
from __future__ import annotations

import os
import string

os.environ.setdefault("MUJOCO_GL", "egl")  # before importing mujoco: headless rendering through EGL

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

XML = """
<mujoco>
  <option timestep="0.01"/>
  <visual><quality shadowsize="0" offsamples="0"/><global offwidth="256" offheight="256"/></visual>
  <worldbody>
    <light pos="0 0 2" dir="0 0 -1" castshadow="false"/>
    <geom type="plane" size="0.5 0.5 0.01" rgba="0.85 0.85 0.8 1"/>
    <camera name="top" pos="0 0 1.15" xyaxes="1 0 0 0 1 0" fovy="45"/>
    <body name="target" mocap="true" pos="0.2 0.2 0.001">
      <geom type="cylinder" size="0.05 0.001" rgba="0.9 0.1 0.1 1" contype="0" conaffinity="0"/>
    </body>
    <body name="puck" pos="0 0 0.02">
      <joint name="x" type="slide" axis="1 0 0" damping="5" limited="true" range="-0.4 0.4"/>
      <joint name="y" type="slide" axis="0 1 0" damping="5" limited="true" range="-0.4 0.4"/>
      <geom type="cylinder" size="0.035 0.02" rgba="0.1 0.2 0.9 1" mass="0.2"/>
    </body>
  </worldbody>
  <actuator>
    <velocity joint="x" kv="2" ctrlrange="-0.5 0.5"/>
    <velocity joint="y" kv="2" ctrlrange="-0.5 0.5"/>
  </actuator>
</mujoco>
"""
INSTRUCTION = "push the blue puck onto the red target"


class PixelReachEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, obs_mode: str = "pixels", size: int = 64, frame_skip: int = 10, render_mode: str | None = None,
                 reward: str = "progress"):
        if obs_mode not in ("pixels", "dict", "state"):
            raise ValueError(f"obs_mode must be 'pixels', 'dict' or 'state', got {obs_mode!r}")
        if reward not in ("progress", "distance"):
            raise ValueError(f"reward must be 'progress' or 'distance', got {reward!r}")
        self.obs_mode, self.size, self.frame_skip, self.render_mode = obs_mode, size, frame_skip, render_mode
        self.reward = reward
        self.model = mujoco.MjModel.from_xml_string(XML)
        self.data = mujoco.MjData(self.model)
        self._renderer: mujoco.Renderer | None = None  # made lazily, in the process that steps the env
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        if obs_mode == "pixels":
            self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)
        elif obs_mode == "state":
            self.observation_space = spaces.Box(-0.5, 0.5, (4,), np.float32)
        else:
            self.observation_space = spaces.Dict({
                "pixels": spaces.Box(0, 255, (3, size, size), np.uint8),
                "puck": spaces.Box(-0.5, 0.5, (2,), np.float32),
                "instruction": spaces.Text(max_length=64, charset=string.ascii_letters + " "),
            })

    def _image(self) -> np.ndarray:
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.size, self.size)
        self._renderer.update_scene(self.data, camera="top")
        return self._renderer.render()  # row 0 is the top of the picture (+y)

    def _obs(self):
        if self.obs_mode == "state":
            return np.concatenate([self.data.qpos[:2], self.data.mocap_pos[0, :2]]).astype(np.float32)
        img = self._image()
        if self.obs_mode == "pixels":
            return img
        return {"pixels": np.ascontiguousarray(img.transpose(2, 0, 1)),
                "puck": self.data.qpos[:2].astype(np.float32), "instruction": INSTRUCTION}

    def _distance(self) -> float:
        return float(np.linalg.norm(self.data.qpos[:2] - self.data.mocap_pos[0, :2]))

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        while True:
            puck, target = self.np_random.uniform(-0.3, 0.3, 2), self.np_random.uniform(-0.3, 0.3, 2)
            if np.linalg.norm(puck - target) > 0.15:
                break
        self.data.qpos[:2] = puck
        self.data.mocap_pos[0, :2] = target
        mujoco.mj_forward(self.model, self.data)
        return self._obs(), {"instruction": INSTRUCTION}

    def step(self, action):
        before = self._distance()
        self.data.ctrl[:] = 0.5 * np.clip(action, -1.0, 1.0)
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        after = self._distance()
        success = after < 0.05
        info = {"is_success": success, "instruction": INSTRUCTION}
        if self.reward == "distance":
            return self._obs(), -after, False, False, info
        reward = (before - after) * 10.0 + (1.0 if success else 0.0)
        return self._obs(), reward, success, False, info

    def render(self):
        return self._image()

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
