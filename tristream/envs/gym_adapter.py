"""GymAdapter: any ``gymnasium.Env`` as a tristream env.

    gymnasium obs (Box | Dict of Box/Text) --ObsLayout--> images uint8 [n_cams, S, S, 3] (channel order
                                                         normalised, resized to S x S; flipped when the env
                                                         renders upside down: env.gym.flip_vertical)
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


MAX_STATE = 4096  # a flat state this long is almost surely an image or a frame stack in disguise


def image_layout(shape: Sequence[int]) -> str | None:
    """The layout of an image-shaped array, or None: "hwc" [H, W, C] (C in 1, 3, 4 = RGBA), "chw" [C, H, W]
    (C in 1, 3; four channels first are more often a frame stack than RGBA), "hw" (grey), sides >= 8."""
    if len(shape) == 2 and min(shape) >= 8:
        return "hw"
    if len(shape) == 3:
        if shape[-1] in (1, 3, 4) and min(shape[:2]) >= 8:
            return "hwc"
        if shape[0] in (1, 3) and min(shape[1:]) >= 8:
            return "chw"
    return None


def to_rgb(img: np.ndarray, layout: str, size: int, flip: bool = False) -> np.ndarray:
    """Any supported image -> uint8 [size, size, 3]: channels last, grey repeated, alpha dropped, resized,
    optionally flipped upside down (renderers whose row 0 is the bottom)."""
    img = np.asarray(img)
    if layout == "chw":
        img = np.moveaxis(img, 0, -1)
    elif layout == "hw":
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    img = img[..., :3]
    if flip:
        img = img[::-1]
    if img.shape[0] != size or img.shape[1] != size:
        from PIL import Image
        img = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((size, size), Image.BILINEAR))
    return np.ascontiguousarray(img, dtype=np.uint8)


def _flat_size(space) -> int:
    return int(np.prod(space.shape)) if space.shape else 1


def infer_layout(env_name: str, obs_space, *, image_keys: Sequence[str] = (), state_keys: Sequence[str] = (),
                 render: bool = False) -> ObsLayout:
    """Map a gymnasium observation space to an :class:`ObsLayout`, or raise :class:`GymSpaceError`.

    Unnamed Box observations are classified by shape and dtype: uint8 image-shaped -> a camera; any other
    pixel-like array (a float image, a uint8 frame stack) -> an error rather than a silent giant state
    vector; other numeric Boxes -> state. Keys named in ``image_keys`` / ``state_keys`` skip the guessing.
    """
    from gymnasium import spaces

    def fail(what: str) -> GymSpaceError:
        return GymSpaceError(f"env {env_name!r}: {what}. Supported: {SUPPORTED}.")

    def where(key: str | None) -> str:
        return "observation" if key is None else f"observation key {key!r}"

    def check_image(key: str | None, space) -> ImageSource:
        if not isinstance(space, spaces.Box):
            raise fail(f"{where(key)} is named as an image but is {space}; images must be Box spaces")
        layout = image_layout(space.shape)
        if layout is None:
            raise fail(f"{where(key)} has shape {space.shape}, not an image (HxWxC with C in 1/3/4, CxHxW with C "
                       f"in 1/3, or HxW; sides >= 8)")
        if space.dtype != np.uint8:
            raise fail(f"{where(key)} is an image of dtype {space.dtype}; images must be uint8 in 0..255 (scale and "
                       f"cast it in the env, or name the key in env.gym.state_keys to use it as state)")
        return ImageSource(key, layout)

    def check_state(key: str | None, space, named: bool) -> tuple[str | None, int]:
        if not isinstance(space, spaces.Box) or not np.issubdtype(space.dtype, np.number):
            raise fail(f"{where(key)} has space {space}; non-image observations must be numeric Box spaces"
                       + ("" if key is None else " (or name the keys to use in env.gym.state_keys)"))
        if not named:
            shape = space.shape
            if len(shape) == 3 and sorted(shape)[1] >= 8:
                what = ("a uint8 array that is neither HxWxC nor CxHxW with C in 1/3 (a frame stack?)"
                        if space.dtype == np.uint8 else f"an image of dtype {space.dtype}")
                raise fail(f"{where(key)} of shape {shape} looks like {what}; cameras must be single uint8 "
                           f"images (convert it in the env"
                           + (", or name the key in env.gym.state_keys to use it as state)" if key else ")"))
            if _flat_size(space) > MAX_STATE:
                raise fail(f"{where(key)} would be a state vector of {_flat_size(space)} values (more than "
                           f"{MAX_STATE}); is it an image? Cameras must be uint8 images")
        return key, _flat_size(space)

    def is_image(space) -> bool:
        return isinstance(space, spaces.Box) and space.dtype == np.uint8 and image_layout(space.shape) is not None

    if isinstance(obs_space, spaces.Box):
        if image_keys or state_keys:
            raise fail(f"env.gym.image_keys/state_keys name keys, but the observation space is {obs_space}, "
                       f"not a Dict")
        if is_image(obs_space):
            return ObsLayout((ImageSource(None, image_layout(obs_space.shape)),), (), None, False)
        state = check_state(None, obs_space, named=False)
        return ObsLayout((ImageSource(None, "hwc"),) if render else (), (state,), None, render)
    if not isinstance(obs_space, spaces.Dict):
        raise fail(f"observation space {obs_space} ({type(obs_space).__name__}) is not supported")

    subspaces = dict(obs_space.spaces)
    for k in [*image_keys, *state_keys]:
        if k not in subspaces:
            raise fail(f"env.gym key {k!r} is not in the observation Dict (keys: {', '.join(subspaces)})")
    images = [check_image(k, subspaces[k]) for k in image_keys] if image_keys else \
        [ImageSource(k, image_layout(s.shape)) for k, s in subspaces.items() if k not in state_keys and is_image(s)]
    taken = {im.key for im in images}
    instruction_key = next((k for k, s in subspaces.items() if isinstance(s, spaces.Text)), None)
    keys = list(state_keys) if state_keys else [k for k in subspaces if k not in taken and k != instruction_key]
    state = [check_state(k, subspaces[k], named=bool(state_keys)) for k in keys]
    if render and not images:
        images = [ImageSource(None, "hwc")]
    if not images and not state:
        raise fail(f"observation space {obs_space} has neither image nor state keys")
    return ObsLayout(tuple(images), tuple(state), instruction_key, bool(render and taken == set()))


class GymAdapter(Env):
    """Wrap one ``gymnasium.Env`` instance (see the module docstring for the mapping)."""

    def __init__(self, env, *, name: str, image_size: int = 64, max_episode_steps: int = 200,
                 image_keys: Sequence[str] = (), state_keys: Sequence[str] = (), instruction: str = "",
                 render: str = "auto", reward_scale: float = 1.0, flip_vertical: bool = False):
        from gymnasium import spaces

        self.env, self.name = env, name
        if render not in ("auto", "always", "never"):
            raise ValueError(f"env.gym.render must be auto, always or never, got {render!r}")
        act = env.action_space
        if not isinstance(act, spaces.Box) or len(act.shape) != 1:
            raise GymSpaceError(f"env {name!r}: action space {act} is not supported; tristream policies emit "
                                f"continuous vectors. Supported: {SUPPORTED}.")
        if not np.issubdtype(act.dtype, np.floating):
            raise GymSpaceError(f"env {name!r}: action space {act} has integer dtype {act.dtype}; tristream policies "
                                f"emit continuous vectors. Supported: {SUPPORTED}.")
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
        self.instruction, self.reward_scale, self.flip = instruction, float(reward_scale), bool(flip_vertical)
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
            imgs = [self._rendered()]
        else:
            imgs = [to_rgb(obs if im.key is None else obs[im.key], im.layout, self.image_size, self.flip)
                    for im in lay.images]
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

    def _rendered(self) -> np.ndarray:
        """env.render() as a camera image, checked: render() is user code and may return anything."""
        frame = self.env.render()
        shape = getattr(frame, "shape", None)
        layout = image_layout(shape) if shape is not None else None
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or layout not in ("hwc", "hw"):
            got = f"{type(frame).__name__}" + (f" {frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else "")
            raise GymSpaceError(f"env {self.name!r}: render() returned {got}; a camera needs a uint8 HxWx3 (or "
                                f"HxW) array, as render_mode='rgb_array' gives. Supported: {SUPPORTED}.")
        return to_rgb(frame, layout, self.image_size, self.flip)

    def render_frame(self) -> np.ndarray | None:
        """A picture for eval videos of envs without cameras (None when the env cannot render)."""
        if getattr(self.env, "render_mode", None) != "rgb_array":
            return None
        return self._rendered()

    def close(self) -> None:
        self.env.close()


def _make_gym(env_id: str, kwargs: dict[str, Any], max_episode_steps: int):
    """A gymnasium env from an import path (its class or factory) or a registered id (gymnasium.make)."""
    import gymnasium

    from tristream.envs.headless_gl import set_defaults
    set_defaults()  # before the env's module loads MuJoCo (a no-op for envs that render otherwise)

    env = None
    if ":" in env_id and env_id.rpartition(":")[2].isidentifier():  # not gymnasium's "module:Id-v0" form
        from tristream.registry import ENVS
        try:
            factory: Callable[..., Any] | None = ENVS.resolve(env_id)
        except ValueError:  # maybe gymnasium's "module:Name" with an unversioned name
            factory = None
        if factory is not None:
            env = factory(**kwargs)
    if env is None:
        try:
            env = gymnasium.make(env_id, max_episode_steps=max_episode_steps, **kwargs)
        except (gymnasium.error.Error, ModuleNotFoundError) as e:
            raise ValueError(f"env.gym.id {env_id!r}: {e} (a registered gymnasium id such as 'Pendulum-v1', or an "
                             f"import path 'package.module:ClassOrFactory')") from e
    if not isinstance(env, gymnasium.Env):
        raise TypeError(f"env.gym.id {env_id!r} built a {type(env).__name__}, not a gymnasium.Env")
    return env


def is_gym_class(obj: Any) -> bool:
    """A gymnasium.Env subclass (what a user may name as env.name by mistake, instead of env.gym.id)."""
    try:
        import gymnasium
    except ImportError:
        return False
    return isinstance(obj, type) and issubclass(obj, gymnasium.Env)


def make_gym_env(*, id: str = "", env_kwargs: dict[str, Any] | None = None, image_size: int = 64,
                 max_episode_steps: int = 200, image_keys: Sequence[str] = (), state_keys: Sequence[str] = (),
                 instruction: str = "", render: str = "auto", reward_scale: float = 1.0, flip_vertical: bool = False,
                 **_common: Any) -> GymAdapter:
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
                      instruction=instruction, render=render, reward_scale=reward_scale, flip_vertical=flip_vertical)
