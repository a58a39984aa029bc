from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from tristream.data import DatasetError, DemoDataset, DemoWriter, instruction_from_filename


def make_episode(rng, T, n_cams=2, H=8, W=8, S=5, A=3):
    return dict(
        images=rng.integers(0, 256, (T, n_cams, H, W, 3), dtype=np.uint8),
        states=rng.standard_normal((T, S)).astype(np.float32),
        actions=rng.standard_normal((T, A)).astype(np.float32),
        rewards=rng.random(T).astype(np.float32),
        dones=np.eye(T, dtype=np.uint8)[-1],
    )


def write_file(path, episodes, **kw):
    with DemoWriter(path, env_args={"env_name": "tabletop", "env_kwargs": {"seed": 1}}) as w:
        for i, ep in enumerate(episodes):
            w.add_episode(**ep, instruction=f"task {i}", task="pick", camera_names=("agentview", "wrist"), **kw)
    return path


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    eps = [make_episode(rng, 4), make_episode(rng, 6)]
    p = write_file(tmp_path / "demos.hdf5", eps)
    assert not Path(str(p) + ".tmp").exists()
    with h5py.File(p, "r") as f:
        assert f["data"].attrs["total"] == 10
        assert json.loads(f["data"].attrs["env_args"])["env_name"] == "tabletop"
        assert f["data/demo_1"].attrs["num_samples"] == 6
        assert f["data/demo_0/obs/agentview_rgb"].dtype == np.uint8
        assert f["data/demo_0/obs/eye_in_hand_rgb"].shape == (4, 8, 8, 3)
        assert f["data/demo_0/dones"].dtype == np.uint8
    ds = DemoDataset(p)
    assert ds.num_episodes == 2 and ds.num_samples == 10 and len(ds) == 2
    assert ds.env_args[str(p)]["env_kwargs"] == {"seed": 1}
    for src, ep, i in zip(eps, ds.episodes, range(2)):
        np.testing.assert_array_equal(ep["images"], src["images"])
        np.testing.assert_array_equal(ep["state"], src["states"])
        np.testing.assert_array_equal(ep["actions"], src["actions"])
        np.testing.assert_array_equal(ep["rewards"], src["rewards"])
        np.testing.assert_array_equal(ep["dones"], src["dones"])
        assert ep["instruction"] == f"task {i}" and ep["task"] == "pick"
    # several files, and a single camera chosen
    ds2 = DemoDataset([p, p], camera_names=("wrist",))
    assert ds2.num_episodes == 4
    np.testing.assert_array_equal(ds2.episodes[0]["images"][:, 0], eps[0]["images"][:, 1])


def test_chunk_samples_padding_and_mask(tmp_path):
    rng = np.random.default_rng(1)
    eps = [make_episode(rng, 3, A=2), make_episode(rng, 2, A=2)]
    ds = DemoDataset(write_file(tmp_path / "d.hdf5", eps))
    out = ds.chunk_samples(3)
    assert out["actions"].shape == (5, 3, 2) and out["mask"].shape == (5, 3)
    assert out["images"].shape == (5, 2, 8, 8, 3) and out["state"].shape == (5, 5)
    a, b = eps[0]["actions"], eps[1]["actions"]
    expected = np.stack([
        np.stack([a[0], a[1], a[2]]),
        np.stack([a[1], a[2], a[2]]),
        np.stack([a[2], a[2], a[2]]),
        np.stack([b[0], b[1], b[1]]),
        np.stack([b[1], b[1], b[1]]),
    ])
    np.testing.assert_array_equal(out["actions"], expected)
    np.testing.assert_array_equal(
        out["mask"],
        np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 0, 0]], dtype=bool),
    )
    np.testing.assert_array_equal(out["images"][3], eps[1]["images"][0])
    np.testing.assert_array_equal(out["state"][2], eps[0]["states"][2])
    assert list(out["episode"]) == [0, 0, 0, 1, 1] and list(out["t"]) == [0, 1, 2, 0, 1]
    assert list(out["instruction"]) == ["task 0"] * 3 + ["task 1"] * 2


LIBERO_NAME = "pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate_demo.hdf5"


def write_libero(path, problem_info=True, T=5, images=None, env_args=None):
    """A LIBERO-schema file; ``images`` (uint8 [T, 16, 16, 3]) replaces both cameras' random frames."""
    rng = np.random.default_rng(2)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["total"] = T
        data.attrs["env_args"] = json.dumps(
            env_args if env_args is not None else {"env_name": "Libero_Tabletop_Manipulation", "type": 1, "env_kwargs": {}})
        if problem_info:
            data.attrs["problem_info"] = json.dumps(
                {"problem_name": "libero_tabletop_manipulation", "domain_name": "robosuite",
                 "language_instruction": "put the bowl on the plate"}
            )
        g = data.create_group("demo_0")
        g.attrs["num_samples"] = T
        g.create_dataset("actions", data=rng.standard_normal((T, 7)))
        g.create_dataset("rewards", data=np.zeros(T, np.uint8))
        g.create_dataset("dones", data=np.eye(T, dtype=np.uint8)[-1])
        obs = g.create_group("obs")
        for key in ("agentview_rgb", "eye_in_hand_rgb"):
            obs.create_dataset(key, data=rng.integers(0, 256, (T, 16, 16, 3), dtype=np.uint8) if images is None else images)
        obs.create_dataset("joint_states", data=rng.standard_normal((T, 7)))
        obs.create_dataset("gripper_states", data=rng.standard_normal((T, 2)))
        obs.create_dataset("ee_pos", data=rng.standard_normal((T, 3)))
        obs.create_dataset("ee_ori", data=rng.standard_normal((T, 3)))
    return path


def test_libero_layout_and_fallbacks(tmp_path):
    p = write_libero(tmp_path / LIBERO_NAME)
    ds = DemoDataset(p)
    ep = ds.episodes[0]
    assert ep["instruction"] == "put the bowl on the plate"  # from data attrs problem_info
    assert ep["task"] == ""
    assert ep["images"].shape == (5, 2, 16, 16, 3)
    with h5py.File(p, "r") as f:
        js, gs = f["data/demo_0/obs/joint_states"][()], f["data/demo_0/obs/gripper_states"][()]
        # LIBERO stores bottom-up frames: they come out right way up
        np.testing.assert_array_equal(ep["images"][:, 1], f["data/demo_0/obs/eye_in_hand_rgb"][()][:, ::-1])
    np.testing.assert_allclose(ep["state"], np.concatenate([js, gs], 1).astype(np.float32))
    assert ep["state"].dtype == np.float32 and ep["actions"].dtype == np.float32
    # a custom state / camera mapping
    ds2 = DemoDataset(p, camera_names=("front",), camera_keys={"front": "agentview_rgb"}, state_keys=["ee_pos", "ee_ori"])
    assert ds2.state_dim == 6 and ds2.episodes[0]["images"].shape == (5, 1, 16, 16, 3)
    # no problem_info: the instruction comes from the file name
    (tmp_path / "sub").mkdir()
    q = write_libero(tmp_path / "sub" / LIBERO_NAME, problem_info=False)
    assert DemoDataset(q).episodes[0]["instruction"] == (
        "pick up the black bowl between the plate and the ramekin and place it on the plate"
    )


def test_instruction_from_filename():
    assert instruction_from_filename("/a/" + LIBERO_NAME).startswith("pick up the black bowl between")
    assert instruction_from_filename("KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5") == "turn on the stove"


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.hdf5"):
        DemoDataset(tmp_path / "nope.hdf5")


def test_garbage_file(tmp_path):
    p = tmp_path / "garbage.hdf5"
    p.write_bytes(b"this is not hdf5 at all" * 50)
    with pytest.raises(DatasetError, match="garbage.hdf5.*not an HDF5 file"):
        DemoDataset(p)


def test_truncated_file(tmp_path):
    rng = np.random.default_rng(3)
    p = write_file(tmp_path / "full.hdf5", [make_episode(rng, 20, H=32, W=32)])
    raw = p.read_bytes()
    t = tmp_path / "trunc.hdf5"
    t.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="trunc.hdf5.*(corrupt|truncated)"):
        DemoDataset(t)


def test_missing_keys(tmp_path):
    p = tmp_path / "nodata.hdf5"
    with h5py.File(p, "w") as f:
        f.create_group("episodes")
    with pytest.raises(DatasetError, match=r"nodata.hdf5.*missing group 'data'.*\['episodes'\]"):
        DemoDataset(p)

    p = write_libero(tmp_path / "noact.hdf5")
    with h5py.File(p, "a") as f:
        del f["data/demo_0/actions"]
    with pytest.raises(DatasetError, match=r"noact.hdf5: demo 'demo_0' is missing 'actions'; keys present: \['dones', 'obs', 'rewards'\]"):
        DemoDataset(p)

    p = write_libero(tmp_path / "nocam.hdf5")
    with h5py.File(p, "a") as f:
        del f["data/demo_0/obs/eye_in_hand_rgb"]
    with pytest.raises(DatasetError) as ei:
        DemoDataset(p)
    msg = str(ei.value)
    assert "nocam.hdf5" in msg and "demo_0" in msg and "obs/eye_in_hand_rgb" in msg and "agentview_rgb" in msg

    with pytest.raises(DatasetError, match="obs/state_x"):
        DemoDataset(write_libero(tmp_path / "nostate.hdf5"), state_keys=["state_x"])


def test_atomic_write(tmp_path):
    rng = np.random.default_rng(4)
    p = tmp_path / "atomic.hdf5"
    with pytest.raises(RuntimeError, match="boom"):
        with DemoWriter(p, env_args={}) as w:
            w.add_episode(**make_episode(rng, 3), instruction="x", task="t", camera_names=("agentview", "wrist"))
            assert Path(str(p) + ".tmp").exists() and not p.exists()
            raise RuntimeError("boom")
    assert not p.exists() and not Path(str(p) + ".tmp").exists()


def test_writer_rejects_bad_shapes(tmp_path):
    rng = np.random.default_rng(5)
    ep = make_episode(rng, 3)
    with DemoWriter(tmp_path / "bad.hdf5", env_args={}) as w:
        with pytest.raises(ValueError, match="cameras"):
            w.add_episode(**ep, instruction="x", task="t", camera_names=("agentview",))
        bad = dict(ep, states=ep["states"][:2])
        with pytest.raises(ValueError, match="states has 2 steps"):
            w.add_episode(**bad, instruction="x", task="t")


def top_bright(T=5, H=16, W=16):
    """Frames whose top rows are white and bottom rows black: [T, H, W, 3] uint8."""
    img = np.zeros((T, H, W, 3), np.uint8)
    img[:, : H // 2] = 255
    return img


def is_upright(images):  # images [..., H, W, 3]: is the bright half on top?
    H = images.shape[-3]
    return images[..., : H // 2, :, :].min() == 255 and images[..., H // 2 :, :, :].max() == 0


def test_flip_vertical_auto_per_file(tmp_path):
    """LIBERO/robomimic files (bottom-up) are flipped, tristream's own (upright) are not: per file."""
    frames = top_bright()
    libero = write_libero(tmp_path / "libero.hdf5", images=frames[:, ::-1])  # stored the way robosuite renders
    robomimic = write_libero(tmp_path / "robomimic.hdf5", problem_info=False, images=frames[:, ::-1],
                             env_args={"env_name": "PickPlaceCan", "type": 1, "env_kwargs": {}})
    other = write_libero(tmp_path / "other.hdf5", problem_info=False, images=frames,
                         env_args={"env_name": "some_gym_env", "type": 2, "env_kwargs": {}})
    ours = tmp_path / "ours.hdf5"
    with DemoWriter(ours, env_args={"env_name": "Libero_Tabletop_Manipulation", "type": 1}) as w:
        w.add_episode(images=np.stack([frames, frames], 1), states=np.zeros((5, 9)), actions=np.zeros((5, 7)),
                      instruction="x")
    with h5py.File(ours, "r") as f:
        assert f["data"].attrs["writer"] == "tristream"
    # a tristream file is upright even when it names a LIBERO env and has problem_info
    with h5py.File(ours, "a") as f:
        f["data"].attrs["problem_info"] = json.dumps({"language_instruction": "x"})
    ds = DemoDataset([libero, ours, robomimic, other])
    assert ds.flipped == {str(libero): True, str(ours): False, str(robomimic): True, str(other): False}
    assert [ep["flipped"] for ep in ds.episodes] == [True, False, True, False]
    for ep in ds.episodes:
        assert is_upright(ep["images"]), ep["file"]
        assert ep["images"].flags["C_CONTIGUOUS"]
    text = repr(ds)
    assert "flip_vertical=auto" in text and "libero.hdf5, robomimic.hdf5" in text and "ours.hdf5" not in text


def test_flip_vertical_explicit_overrides_auto(tmp_path):
    frames = top_bright()
    libero = write_libero(tmp_path / "libero.hdf5", images=frames)  # stored upright despite being LIBERO
    ds = DemoDataset(libero, flip_vertical=False)
    assert ds.flipped == {str(libero): False} and is_upright(ds.episodes[0]["images"])
    assert not is_upright(DemoDataset(libero).episodes[0]["images"])  # what auto would have done
    ours = write_file(tmp_path / "ours.hdf5", [dict(make_episode(np.random.default_rng(0), 5, H=16, W=16),
                                                     images=np.stack([frames, frames], 1))])
    ds = DemoDataset(ours, flip_vertical=True)
    assert ds.flipped == {str(ours): True} and ds.episodes[0]["flipped"]
    np.testing.assert_array_equal(ds.episodes[0]["images"][:, 0], frames[:, ::-1])
    assert DemoDataset(ours, flip_vertical="auto").flipped == {str(ours): False}
    with pytest.raises(ValueError, match=r"flip_vertical must be True, False or None/'auto'.*'yes'"):
        DemoDataset(ours, flip_vertical="yes")


def test_flip_vertical_config_key():
    from tristream.config import Config, ConfigError, load_config
    assert load_config(Config).sft.flip_vertical == "auto"
    assert load_config(Config, overrides=["sft.flip_vertical=true"]).sft.flip_vertical is True
    assert load_config(Config, overrides=["sft.flip_vertical=false"]).sft.flip_vertical is False
    with pytest.raises(ConfigError, match=r"sft\.flip_vertical: invalid choice 'sideways'.*'auto', True, False"):
        load_config(Config, overrides=["sft.flip_vertical=sideways"])
