"""The Gymnasium adapter: space mapping, action scaling, episode ends, success, instruction, and the
errors for envs that do not fit."""
import os

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from tristream.envs.gym_adapter import GymAdapter, GymSpaceError, image_layout, infer_layout, make_gym_env, to_rgb


class Scripted(gym.Env):
    """A tiny gymnasium env whose spaces and episode ends the test chooses; it records the actions it got."""

    def __init__(self, obs_space=None, action_space=None, end_at=None, success_key="is_success",
                 info_instruction=None, render_mode=None):
        self.observation_space = obs_space or spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = action_space or spaces.Box(np.array([0.0, -4.0], np.float32),
                                                       np.array([2.0, 4.0], np.float32))
        self.end_at, self.success_key, self.info_instruction = end_at, success_key, info_instruction
        self.render_mode, self.actions, self.t = render_mode, [], 0

    def _info(self):
        return {"instruction": self.info_instruction} if self.info_instruction else {}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), self._info()

    def step(self, action):
        self.actions.append(np.array(action))
        self.t += 1
        terminated = self.end_at == ("terminate", self.t)
        truncated = self.end_at == ("truncate", self.t)
        info = {**self._info(), self.success_key: terminated}
        return self.observation_space.sample(), 0.5, terminated, truncated, info

    def render(self):
        return np.full((20, 30, 3), 7, np.uint8)


def adapter(env, **kw):
    return GymAdapter(env, name="scripted", image_size=16, max_episode_steps=kw.pop("max_episode_steps", 50), **kw)


# ---------------------------------------------------------------- observation layouts
@pytest.mark.parametrize("shape,layout", [((64, 48, 3), "hwc"), ((3, 64, 48), "chw"), ((32, 32), "hw"),
                                          ((32, 32, 1), "hwc"), ((4, 16, 16), None), ((32, 32, 4), "hwc"),
                                          ((3,), None), ((2, 3, 4), None), ((4, 4, 3), None)])
def test_image_layout_by_shape(shape, layout):
    assert image_layout(shape) == layout


def test_to_rgb_normalises_channels_and_size():
    chw = np.zeros((3, 10, 12), np.uint8)
    chw[0] = 200  # red channel
    out = to_rgb(chw, "chw", 10)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8 and (out[..., 0] == 200).all() and out[..., 1].max() == 0
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert (to_rgb(grey, "hw", 8) == grey[..., None]).all()
    rgba = np.full((8, 8, 4), 9, np.uint8)
    assert to_rgb(rgba, "hwc", 8).shape == (8, 8, 3)


def test_dict_layout_detects_images_state_and_text():
    space = spaces.Dict({"cam": spaces.Box(0, 255, (3, 32, 32), np.uint8), "wrist": spaces.Box(0, 255, (16, 16, 3), np.uint8),
                         "q": spaces.Box(-1, 1, (2, 2), np.float32), "v": spaces.Box(-1, 1, (3,), np.float64),
                         "task": spaces.Text(20)})
    lay = infer_layout("e", space)
    assert [(i.key, i.layout) for i in lay.images] == [("cam", "chw"), ("wrist", "hwc")]
    assert lay.state_keys == (("q", 4), ("v", 3)) and lay.state_dim == 7 and lay.instruction_key == "task"
    named = infer_layout("e", space, image_keys=["wrist"], state_keys=["v"])
    assert [i.key for i in named.images] == ["wrist"] and named.state_keys == (("v", 3),)


@pytest.mark.parametrize("space,needle", [
    (spaces.Discrete(4), "Discrete"),
    (spaces.Tuple((spaces.Box(0, 1, (2,)),)), "Tuple"),
    (spaces.Dict({"a": spaces.Discrete(3)}), "'a'"),
    (spaces.Dict({"m": spaces.MultiBinary(3)}), "'m'"),
    (spaces.Dict({"t": spaces.Text(5)}), "neither image nor state"),
])
def test_unsupported_observation_spaces_name_env_space_and_what_fits(space, needle):
    with pytest.raises(GymSpaceError) as e:
        infer_layout("my_env", space)
    msg = str(e.value)
    assert "'my_env'" in msg and needle in msg and "Supported:" in msg


@pytest.mark.parametrize("space,needle", [
    (spaces.Box(0.0, 1.0, (64, 64, 3), np.float32), "looks like an image of dtype float32"),
    (spaces.Box(0, 255, (9, 84, 84), np.uint8), "a frame stack?"),
    (spaces.Box(0, 255, (4, 84, 84), np.uint8), "a frame stack?"),
    (spaces.Box(-1.0, 1.0, (5000,), np.float32), "a state vector of 5000 values"),
])
def test_pixel_like_observations_are_not_silently_used_as_state(space, needle):
    with pytest.raises(GymSpaceError, match=needle.replace("?", r"\?")):
        infer_layout("e", space)
    # in a Dict, naming the key as state is the way to say "yes, really"
    lay = infer_layout("e", spaces.Dict({"x": space}), state_keys=["x"])
    assert lay.images == () and lay.state_dim == int(np.prod(space.shape))


def test_state_keys_take_a_key_out_of_image_detection():
    space = spaces.Dict({"grid": spaces.Box(0, 255, (16, 16), np.uint8), "cam": spaces.Box(0, 255, (16, 16, 3), np.uint8)})
    lay = infer_layout("e", space, state_keys=["grid"])
    assert [i.key for i in lay.images] == ["cam"] and lay.state_keys == (("grid", 256),)


def test_named_image_key_with_wrong_dtype_or_missing_key():
    space = spaces.Dict({"depth": spaces.Box(0, 1, (32, 32, 1), np.float32), "s": spaces.Box(0, 1, (2,))})
    with pytest.raises(GymSpaceError, match="'depth' is an image of dtype float32; images must be uint8"):
        infer_layout("e", space, image_keys=["depth"])
    with pytest.raises(GymSpaceError, match="'rgb' is not in the observation Dict"):
        infer_layout("e", space, image_keys=["rgb"])


@pytest.mark.parametrize("action_space,needle", [
    (spaces.Discrete(3), "Discrete"),
    (spaces.MultiDiscrete([2, 3]), "MultiDiscrete"),
    (spaces.Box(-np.inf, np.inf, (2,), np.float32), "infinite bounds"),
    (spaces.Box(-1, 1, (2, 2), np.float32), "not supported"),
    (spaces.Box(-3, 3, (2,), np.int64), "integer dtype"),
])
def test_unsupported_action_spaces(action_space, needle):
    with pytest.raises(GymSpaceError) as e:
        adapter(Scripted(action_space=action_space))
    assert needle in str(e.value) and "'scripted'" in str(e.value)


def test_render_always_needs_rgb_array_render_mode():
    with pytest.raises(GymSpaceError, match="render_mode='rgb_array'"):
        adapter(Scripted(), render="always")


@pytest.mark.parametrize("frame,needle", [(None, "render\\(\\) returned NoneType"),
                                          (np.zeros((20, 30, 3), np.float32), "float32"),
                                          ([np.zeros((20, 30, 3), np.uint8)], "returned list")])
def test_render_output_is_checked(frame, needle):
    env = Scripted(render_mode="rgb_array")
    env.render = lambda: frame
    with pytest.raises(GymSpaceError, match=needle):
        adapter(env).reset(seed=0)


def test_flip_vertical():
    img = np.zeros((16, 16, 3), np.uint8)
    img[0] = 255  # top row white
    env = Scripted(obs_space=spaces.Box(0, 255, (16, 16, 3), np.uint8))
    env.observation_space.sample = lambda: img
    assert adapter(env).reset(seed=0)["images"][0, 0].min() == 255
    flipped = adapter(env, flip_vertical=True).reset(seed=0)["images"][0]
    assert flipped[0].max() == 0 and flipped[-1].min() == 255


# ---------------------------------------------------------------- stepping
def test_actions_are_scaled_to_the_box_and_clipped():
    env = Scripted()
    a = adapter(env)
    a.reset(seed=0)
    a.step(np.array([-1.0, 1.0]))
    a.step(np.array([0.0, 0.0]))
    a.step(np.array([5.0, -5.0]))  # out of range: clipped to the bounds
    np.testing.assert_allclose(env.actions, [[0.0, 4.0], [1.0, 0.0], [2.0, -4.0]])
    assert env.actions[0].dtype == np.float32


def test_terminated_and_truncated_stay_apart_and_the_step_limit_truncates():
    a = adapter(Scripted(end_at=("terminate", 2)))
    a.reset(seed=0)
    assert a.step(np.zeros(2))[2:4] == (False, False)
    _, _, term, trunc, info = a.step(np.zeros(2))
    assert (term, trunc, info["success"]) == (True, False, True)
    b = adapter(Scripted(end_at=("truncate", 2)))
    b.reset(seed=0)
    b.step(np.zeros(2))
    assert b.step(np.zeros(2))[2:4] == (False, True)
    c = adapter(Scripted(), max_episode_steps=3)
    c.reset(seed=0)
    ends = [c.step(np.zeros(2))[2:4] for _ in range(3)]
    assert ends == [(False, False), (False, False), (False, True)]


@pytest.mark.parametrize("key", ["is_success", "success"])
def test_success_from_info(key):
    a = adapter(Scripted(end_at=("terminate", 1), success_key=key))
    a.reset(seed=0)
    assert a.step(np.zeros(2))[4]["success"] is True


def test_success_is_sticky_within_an_episode_and_is_success_wins():
    env = Scripted()
    infos = iter([{"is_success": True, "success": False}, {"is_success": False}, {}])
    env.step = lambda action: (env.observation_space.sample(), 0.0, False, False, next(infos))
    a = adapter(env)
    a.reset(seed=0)
    assert [a.step(np.zeros(2))[4]["success"] for _ in range(3)] == [True, True, True]
    a.reset(seed=1)
    env.step = lambda action: (env.observation_space.sample(), 0.0, False, False, {"success": False})
    assert a.step(np.zeros(2))[4]["success"] is False  # reset clears it


def test_termination_on_the_last_allowed_step_is_not_truncation():
    a = adapter(Scripted(end_at=("terminate", 3)), max_episode_steps=3)
    a.reset(seed=0)
    ends = [a.step(np.zeros(2))[2:4] for _ in range(3)]
    assert ends[-1] == (True, False)


def test_instruction_from_config_info_text_key_or_env_name():
    assert adapter(Scripted()).reset(seed=0)["instruction"] == "scripted"
    assert adapter(Scripted(info_instruction="open the door")).reset(seed=0)["instruction"] == "open the door"
    assert adapter(Scripted(info_instruction="x"), instruction="fixed").reset(seed=0)["instruction"] == "fixed"
    text_env = Scripted(obs_space=spaces.Dict({"s": spaces.Box(0, 1, (2,)), "lang": spaces.Text(8, charset="ab")}))
    obs = adapter(text_env).reset(seed=0)
    assert set(obs["instruction"]) <= {"a", "b"} and obs["state"].shape == (2,)


def test_state_only_env_has_no_cameras_and_render_can_stand_in():
    a = adapter(Scripted())
    obs = a.reset(seed=0)
    assert a.spec.num_cameras == 0 and obs["images"].shape == (0, 16, 16, 3) and obs["state"].dtype == np.float32
    r = adapter(Scripted(render_mode="rgb_array"))  # auto: an rgb_array env is rendered as its camera
    obs = r.reset(seed=0)
    assert r.spec.camera_names == ("render",) and obs["images"].shape == (1, 16, 16, 3) and (obs["images"] == 7).all()
    assert adapter(Scripted(render_mode="rgb_array"), render="never").spec.num_cameras == 0


def test_reward_scale():
    a = adapter(Scripted(), reward_scale=0.1)
    a.reset(seed=0)
    assert a.step(np.zeros(2))[1] == pytest.approx(0.05)


# ---------------------------------------------------------------- building from the config
def test_pendulum_by_gymnasium_id_is_seeded():
    env = make_gym_env(id="Pendulum-v1", image_size=16, max_episode_steps=5)
    assert (env.spec.action_dim, env.spec.state_dim, env.spec.num_cameras) == (1, 3, 0)
    first = env.reset(seed=3)["state"]
    np.testing.assert_array_equal(first, env.reset(seed=3)["state"])
    assert not np.array_equal(first, env.reset(seed=4)["state"])
    ends = [env.step(np.ones(1))[3] for _ in range(5)]
    assert ends[-1] and not any(ends[:-1])


def test_pixel_env_by_import_path_with_kwargs():
    env = make_gym_env(id="examples.pixel_reach:PixelReachEnv", env_kwargs={"obs_mode": "dict"}, image_size=32)
    obs = env.reset(seed=0)
    assert env.spec.camera_names == ("pixels",) and obs["images"].shape == (1, 32, 32, 3)
    assert obs["state"].shape == (2,) and obs["instruction"].startswith("push the blue puck")
    env.close()


@pytest.mark.parametrize("obs_mode", ["pixels", "dict"])
def test_example_env_passes_gymnasiums_checker(obs_mode):
    from gymnasium.utils.env_checker import check_env

    from examples.pixel_reach import PixelReachEnv
    env = PixelReachEnv(obs_mode=obs_mode, size=32)
    check_env(env, skip_render_check=True)
    env.close()


def test_a_gymnasium_class_named_as_env_name_goes_through_the_adapter(tiny):
    from tristream.envs.from_config import env_from_config
    env = env_from_config(tiny("env.name=examples.pixel_reach:PixelReachEnv", "env.kwargs.size=32").env)
    assert isinstance(env, GymAdapter) and env.spec.camera_names == ("pixels",)
    env.close()


def test_bad_ids_are_clear():
    with pytest.raises(ValueError, match="env.gym.id 'NoSuchEnv-v9'"):
        make_gym_env(id="NoSuchEnv-v9")
    with pytest.raises(ValueError, match="needs env.gym.id"):
        make_gym_env()
    with pytest.raises(TypeError, match="not a gymnasium.Env"):
        make_gym_env(id="collections:OrderedDict")


def test_the_rendering_defaults_apply_to_gym_envs_and_a_user_value_wins(monkeypatch):
    """Software GL rasterises in the env's own thread (LP_NUM_THREADS=0) for a user's env as for the
    built-in ones; the defaults are set before the env's module loads and never replace a set value."""
    monkeypatch.delenv("LP_NUM_THREADS", raising=False)
    make_gym_env(id="Pendulum-v1")
    assert os.environ["LP_NUM_THREADS"] == "0" and os.environ["MUJOCO_GL"]
    monkeypatch.setenv("LP_NUM_THREADS", "2")
    make_gym_env(id="Pendulum-v1")
    assert os.environ["LP_NUM_THREADS"] == "2"
