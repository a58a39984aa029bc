"""GymAdapter: any ``gymnasium.Env`` as a tristream env.

    gymnasium obs (Box | Dict of Box/Text) --ObsLayout--> images uint8 [n_cams, S, S, 3] (right way up,
                                                         channel order normalised, resized to S x S)
                                                         state float32 [state_dim] (the other Box keys, flat)
                                                         instruction str (Text key | info | config | env id)
    tristream action in [-1, 1]^A --affine--> the env's Box(low, high)

Image keys are detected by shape and dtype (uint8, HxWxC or CxHxW with C in 1/3/4, or HxW) unless named in
``image_keys``. An env with no image observation is rendered through its own ``render()`` as its camera
when ``render="always"``, or with ``"auto"`` when it was built with ``render_mode="rgb_array"``; otherwise it
is state-only (no cameras). Episode ends keep terminated apart from
truncated; success comes from ``info["is_success"]`` or ``info["success"]`` (False when neither is there).
tristream does the rest: vectorisation, auto-reset, action chunking, the step limit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from tristream.envs.base import Env, EnvSpec, Obs

SUPPORTED = ("observations: Box (image or state) or Dict of Box/Text subspaces; "
             "actions: Box with finite bounds")
INSTRUCTION_INFO_KEYS = ("instruction", "language_instruction", "task_description")


class GymSpaceError(ValueError):
    """An env whose spaces tristream cannot map; the message names the env, the space and what fits."""


@dataclass(frozen=True)
class ImageSource:
    key: str | None  # Dict key, or None for a top-level Box (or the env's render())
    layout: str  # "hwc", "chw" or "hw"


@dataclass(frozen=True)
class ObsLayout:
    """Where each part of a tristream observation comes from in the gymnasium observation."""

    images: tuple[ImageSource, ...]
    state_keys: tuple[tuple[str | None, int], ...]  # (key or None for a top-level Box, flat size)
    instruction_key: str | None
    render: bool  # images come from env.render()

    @property
    def state_dim(self) -> int:
        return sum(n for _, n in self.state_keys)


def image_layout(shape: Sequence[int]) -> str | None:
    """The layout of an image-shaped array, or None: "hwc" [H, W, C], "chw" [C, H, W] (C in 1, 3, 4), "hw"."""
    if len(shape) == 2 and min(shape) >= 8:
        return "hw"
    if len(shape) == 3:
        if shape[-1] in (1, 3, 4) and min(shape[:2]) >= 8:
            return "hwc"
        if shape[0] in (1, 3, 4) and min(shape[1:]) >= 8:
            return "chw"
    return None


def to_rgb(img: np.ndarray, layout: str, size: int) -> np.ndarray:
    """Any supported image -> uint8 [size, size, 3]: channels last, grey repeated, alpha dropped, resized."""
    img = np.asarray(img)
    if layout == "chw":
        img = np.moveaxis(img, 0, -1)
    elif layout == "hw":
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    img = img[..., :3]
    if img.shape[0] != size or img.shape[1] != size:
        from PIL import Image
        img = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((size, size), Image.BILINEAR))
    return np.ascontiguousarray(img, dtype=np.uint8)


def _flat_size(space) -> int:
    return int(np.prod(space.shape)) if space.shape else 1


def infer_layout(env_name: str, obs_space, *, image_keys: Sequence[str] = (), state_keys: Sequence[str] = (),
                 render: bool = False) -> ObsLayout:
    """Map a gymnasium observation space to an :class:`ObsLayout`, or raise :class:`GymSpaceError`."""
    from gymnasium import spaces

    def fail(what: str) -> GymSpaceError:
        return GymSpaceError(f"env {env_name!r}: {what}. Supported: {SUPPORTED}.")

    def check_image(key: str | None, space) -> ImageSource:
        where = "observation" if key is None else f"observation key {key!r}"
        if not isinstance(space, spaces.Box):
            raise fail(f"{where} is named as an image but is {space}; images must be Box spaces")
        layout = image_layout(space.shape)
        if layout is None:
            raise fail(f"{where} has shape {space.shape}, not an image (HxWxC, CxHxW with C in 1/3/4, or HxW, "
                       f"sides >= 8)")
        if space.dtype != np.uint8:
            raise fail(f"{where} is an image of dtype {space.dtype}; images must be uint8 in 0..255 (scale and "
                       f"cast it in the env, or leave it out of env.gym.image_keys to use it as state)")
        return ImageSource(key, layout)

    def is_image(space) -> bool:
        return isinstance(space, spaces.Box) and space.dtype == np.uint8 and image_layout(space.shape) is not None

    if isinstance(obs_space, spaces.Box):
        if image_keys:
            raise fail(f"env.gym.image_keys {list(image_keys)} names keys, but the observation space is {obs_space}, "
                       f"not a Dict")
        if is_image(obs_space):
            return ObsLayout((ImageSource(None, image_layout(obs_space.shape)),), (), None, False)
        if not np.issubdtype(obs_space.dtype, np.number):
            raise fail(f"observation space {obs_space} has dtype {obs_space.dtype}; state must be numeric")
        return ObsLayout((ImageSource(None, "hwc"),) if render else (), ((None, _flat_size(obs_space)),), None,
                         render)
    if not isinstance(obs_space, spaces.Dict):
        raise fail(f"observation space {obs_space} ({type(obs_space).__name__}) is not supported")

    subspaces = dict(obs_space.spaces)
    for k in [*image_keys, *state_keys]:
        if k not in subspaces:
            raise fail(f"env.gym key {k!r} is not in the observation Dict (keys: {', '.join(subspaces)})")
    images = [check_image(k, subspaces[k]) for k in image_keys] if image_keys else \
        [ImageSource(k, image_layout(s.shape)) for k, s in subspaces.items() if is_image(s)]
    taken = {im.key for im in images}
    instruction_key = next((k for k, s in subspaces.items() if isinstance(s, spaces.Text)), None)
    keys = list(state_keys) if state_keys else [k for k in subspaces if k not in taken and k != instruction_key]
    state = []
    for k in keys:
        s = subspaces[k]
        if not isinstance(s, spaces.Box) or not np.issubdtype(s.dtype, np.number):
            raise fail(f"observation key {k!r} has space {s}; non-image keys must be numeric Box spaces "
                       f"(or name the keys to use in env.gym.state_keys)")
        state.append((k, _flat_size(s)))
    if render and not images:
        images = [ImageSource(None, "hwc")]
    if not images and not state:
        raise fail(f"observation space {obs_space} has neither image nor state keys")
    return ObsLayout(tuple(images), tuple(state), instruction_key, bool(render and taken == set()))


class GymAdapter(Env):
    """Wrap one ``gymnasium.Env`` instance (see the module docstring for the mapping)."""

    def __init__(self, env, *, name: str, image_size: int = 64, max_episode_steps: int = 200,
                 image_keys: Sequence[str] = (), state_keys: Sequence[str] = (), instruction: str = "",
                 render: str = "auto", reward_scale: float = 1.0):
        from gymnasium import spaces

        self.env, self.name = env, name
        if render not in ("auto", "always", "never"):
            raise ValueError(f"env.gym.render must be auto, always or never, got {render!r}")
        act = env.action_space
        if not isinstance(act, spaces.Box) or len(act.shape) != 1:
            raise GymSpaceError(f"env {name!r}: action space {act} is not supported; tristream policies emit "
                                f"continuous vectors. Supported: {SUPPORTED}.")
        if not (np.all(np.isfinite(act.low)) and np.all(np.isfinite(act.high))):
            raise GymSpaceError(f"env {name!r}: action space {act} has infinite bounds; tristream scales actions "
                                f"from [-1, 1] to [low, high]. Supported: {SUPPORTED}.")
        self._low, self._high = act.low.astype(np.float64), act.high.astype(np.float64)
        # render() stands in for a camera only when asked, or (auto) when the env renders rgb arrays anyway
        want_render = render == "always" or (render == "auto" and getattr(env, "render_mode", None) == "rgb_array")
        self.layout = infer_layout(name, env.observation_space, image_keys=image_keys, state_keys=state_keys,
                                   render=want_render)
        if self.layout.render and getattr(env, "render_mode", None) != "rgb_array":
            raise GymSpaceError(f"env {name!r}: env.gym.render=always needs render_mode='rgb_array', but the env's "
                                f"render_mode is {getattr(env, 'render_mode', None)!r} (pass "
                                f"env.kwargs.render_mode=rgb_array if its constructor takes it)")
        self.image_size, self.max_episode_steps = int(image_size), int(max_episode_steps)
        self.instruction, self.reward_scale = instruction, float(reward_scale)
        cams = tuple(im.key or ("render" if self.layout.render else "pixels") for im in self.layout.images)
        self.spec = EnvSpec(action_dim=int(act.shape[0]), state_dim=self.layout.state_dim, camera_names=cams,
                            image_size=self.image_size, max_episode_steps=self.max_episode_steps, tasks=(name,))
        self._t, self._instr, self._success = 0, instruction or name, False

    @property
    def task(self) -> str:
        return self.name

    def _convert(self, obs, info: dict[str, Any]) -> Obs:
        lay = self.layout
        if lay.render:
            frame = np.asarray(self.env.render())
            imgs = [to_rgb(frame, image_layout(frame.shape) or "hwc", self.image_size)]
        else:
            imgs = [to_rgb(obs if im.key is None else obs[im.key], im.layout, self.image_size) for im in lay.images]
        images = np.stack(imgs) if imgs else np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
        parts = [np.asarray(obs if k is None else obs[k], dtype=np.float32).reshape(-1) for k, _ in lay.state_keys]
        state = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if not self.instruction:
            if lay.instruction_key is not None:
                self._instr = str(obs[lay.instruction_key])
            else:
                self._instr = next((str(info[k]) for k in INSTRUCTION_INFO_KEYS if k in info), self._instr)
        return {"images": images, "state": state, "instruction": self._instr}

    def reset(self, seed: int) -> Obs:
        obs, info = self.env.reset(seed=int(seed))
        self._t, self._success = 0, False
        return self._convert(obs, info)

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        a = self._low + (a + 1.0) * 0.5 * (self._high - self._low)
        obs, reward, terminated, truncated, info = self.env.step(a.astype(self.env.action_space.dtype))
        self._t += 1
        truncated = bool(truncated) or (not terminated and self._t >= self.max_episode_steps)
        self._success = self._success or bool(info.get("is_success", info.get("success", False)))
        out = {"success": self._success, "task": self.name}
        return self._convert(obs, info), float(reward) * self.reward_scale, bool(terminated), truncated, out

    def render_frame(self) -> np.ndarray | None:
        """A picture for eval videos of envs without cameras (None when the env cannot render)."""
        if getattr(self.env, "render_mode", None) != "rgb_array":
            return None
        frame = np.asarray(self.env.render())
        return to_rgb(frame, image_layout(frame.shape) or "hwc", self.image_size)

    def close(self) -> None:
        self.env.close()


def _make_gym(env_id: str, kwargs: dict[str, Any], max_episode_steps: int):
    """A gymnasium env from a registered id (gymnasium.make) or an import path (its class or factory)."""
    import gymnasium

    if ":" in env_id and env_id.rpartition(":")[2].isidentifier():  # not gymnasium's "module:Id-v0" form
        from tristream.registry import ENVS
        factory: Callable[..., Any] = ENVS.resolve(env_id)
        env = factory(**kwargs)
    else:
        try:
            env = gymnasium.make(env_id, max_episode_steps=max_episode_steps, **kwargs)
        except gymnasium.error.Error as e:
            raise ValueError(f"env.gym.id {env_id!r}: {e} (a registered gymnasium id such as 'Pendulum-v1', or an "
                             f"import path 'package.module:ClassOrFactory')") from e
    if not isinstance(env, gymnasium.Env):
        raise TypeError(f"env.gym.id {env_id!r} built a {type(env).__name__}, not a gymnasium.Env")
    return env


def make_gym_env(*, id: str = "", env_kwargs: dict[str, Any] | None = None, image_size: int = 64,
                 max_episode_steps: int = 200, image_keys: Sequence[str] = (), state_keys: Sequence[str] = (),
                 instruction: str = "", render: str = "auto", reward_scale: float = 1.0, **_common: Any) -> GymAdapter:
    """Registry factory for ``env.name=gym``: ``id`` is a gymnasium id or ``package.module:ClassOrFactory``,
    ``env_kwargs`` go to its constructor (``env.kwargs.*``); the rest configures the adapter (``env.gym.*``)."""
    if not id:
        raise ValueError("env.name=gym needs env.gym.id: a registered gymnasium id (e.g. Pendulum-v1) or an "
                         "import path package.module:ClassOrFactory")
    kwargs = dict(env_kwargs or {})
    if render == "always":
        kwargs.setdefault("render_mode", "rgb_array")
    env = _make_gym(id, kwargs, max_episode_steps)
    return GymAdapter(env, name=id.rpartition(":")[2] if ":" in id else id, image_size=image_size,
                      max_episode_steps=max_episode_steps, image_keys=image_keys, state_keys=state_keys,
                      instruction=instruction, render=render, reward_scale=reward_scale)
