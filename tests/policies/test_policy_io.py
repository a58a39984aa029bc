"""save_policy / load_policy: exact round trips and a clear error for every way a checkpoint can be bad."""
import json

import numpy as np
import pytest
import torch

from tristream.envs.base import EnvSpec
from tristream.policies import load_policy, make_policy, read_policy_meta, save_policy

SPEC = EnvSpec(
    action_dim=2, state_dim=4, camera_names=("front",), image_size=16, max_episode_steps=10,
    tasks=("reach",), extra={"fps": 20, "fn": object()},
)
TINY = dict(conv_channels=(8, 8), conv_strides=(2, 2), hidden_dim=32, lang_dim=16, proprio_dim=8, chunk_len=2)


def make_obs(b=3):
    rng = np.random.default_rng(0)
    return {
        "images": torch.from_numpy(rng.integers(0, 256, (b, 1, 16, 16, 3), dtype=np.uint8)),
        "state": torch.from_numpy(rng.standard_normal((b, 4)).astype(np.float32)),
        "instruction": ["reach the red block", "push blue", "zzz"][:b],
    }


@pytest.mark.parametrize("head", ["gaussian", "discrete"])
def test_round_trip_gives_identical_outputs(tmp_path, head):
    torch.manual_seed(0)
    p = make_policy("vla", SPEC, head=head, normalize_state=True, **TINY)
    p.observe(make_obs())  # move the running-norm buffers away from their init
    p.eval()
    json_path = save_policy(p, tmp_path / "ckpt", extra={"step": 7, "bad": object()})
    assert json_path == tmp_path / "ckpt" / "policy.json"
    meta = read_policy_meta(tmp_path / "ckpt")
    assert meta["policy"] == "vla" and meta["config"]["head"] == head
    assert meta["env_spec"]["camera_names"] == ["front"] and meta["env_spec"]["extra"]["fps"] == 20
    assert meta["extra"]["step"] == 7 and meta["extra"]["_dropped_non_json"] == ["bad"]
    for where in (tmp_path / "ckpt", json_path, tmp_path / "ckpt" / "policy.safetensors", tmp_path / "ckpt" / "policy"):
        q = load_policy(where).eval()
        assert q.env_spec.camera_names == ("front",) and q.config == p.config
        obs = make_obs()
        with torch.no_grad():
            a = p.act(obs, deterministic=True)
            b = q.act(obs, deterministic=True)
            assert torch.equal(a.actions, b.actions) and torch.equal(a.value, b.value)
            assert torch.equal(p.evaluate(obs, a.actions).logp, q.evaluate(obs, a.actions).logp)
        for k, v in p.state_dict().items():
            assert torch.equal(v, q.state_dict()[k]), k
    assert sorted(x.name for x in (tmp_path / "ckpt").iterdir()) == ["policy.json", "policy.safetensors"]


def test_custom_name_and_overwrite(tmp_path):
    p = make_policy("vla", SPEC, **TINY)
    save_policy(p, tmp_path, name="step_10")
    save_policy(p, tmp_path, name="step_10")  # overwriting is fine (atomic replace)
    q = load_policy(tmp_path, name="step_10")
    assert q.config == p.config
    with pytest.raises(FileNotFoundError, match="policy.json"):
        load_policy(tmp_path)  # default name "policy" is not there


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata JSON"):
        load_policy(tmp_path / "nowhere")
    p = make_policy("vla", SPEC, **TINY)
    save_policy(p, tmp_path)
    (tmp_path / "policy.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"policy\.safetensors.*weights"):
        load_policy(tmp_path)


def test_corrupt_json(tmp_path):
    save_policy(make_policy("vla", SPEC, **TINY), tmp_path)
    (tmp_path / "policy.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"policy\.json.*corrupt"):
        load_policy(tmp_path)
    (tmp_path / "policy.json").write_text(json.dumps({"policy": "vla"}))
    with pytest.raises(ValueError, match=r"lacks key"):
        load_policy(tmp_path)


def test_corrupt_safetensors(tmp_path):
    save_policy(make_policy("vla", SPEC, **TINY), tmp_path)
    w = tmp_path / "policy.safetensors"
    w.write_bytes(w.read_bytes()[:50])  # truncated
    with pytest.raises(ValueError, match=r"policy\.safetensors.*corrupt"):
        load_policy(tmp_path)
    w.write_bytes(b"\x00" * 7)
    with pytest.raises(ValueError, match=r"policy\.safetensors.*corrupt"):
        load_policy(tmp_path)


def test_shape_mismatch_names_the_tensor(tmp_path):
    save_policy(make_policy("vla", SPEC, **TINY), tmp_path)
    meta = json.loads((tmp_path / "policy.json").read_text())
    meta["config"]["hidden_dim"] = 48
    (tmp_path / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"tensor 'trunk\.0\.weight' has shape"):
        load_policy(tmp_path)


def test_missing_tensor_is_named(tmp_path):
    save_policy(make_policy("vla", SPEC, **TINY), tmp_path)
    meta = json.loads((tmp_path / "policy.json").read_text())
    meta["config"]["normalize_state"] = True  # the saved weights have no running-norm buffers
    (tmp_path / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"missing \['proprio\.norm\.count'"):
        load_policy(tmp_path)


def test_unsaveable_policy(tmp_path):
    with pytest.raises(ValueError, match="registry_name"):
        save_policy(torch.nn.Linear(2, 2), tmp_path)
