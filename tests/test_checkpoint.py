"""Checkpoints that cannot be half-written, and reading that falls back past an unreadable newest one."""
import errno

import pytest
import torch

from tristream import checkpoint as ck
from tristream.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from tristream.cli import main
from tristream.envs.base import EnvSpec
from tristream.policies import make_policy

SPEC = EnvSpec(action_dim=3, state_dim=5, camera_names=(), image_size=16, max_episode_steps=10)


@pytest.fixture
def run(tmp_path):
    """A run with checkpoints at steps 1, 2, 3 of a small MLP policy; weights differ per step."""
    policy = make_policy("mlp", SPEC, hidden_dim=8)
    for step in (1, 2, 3):
        with torch.no_grad():
            next(policy.parameters()).fill_(float(step))
        save_checkpoint(tmp_path, step, policy, {"learner": {"version": step}})
    return tmp_path


def _weights_of(path):
    return float(next(load_checkpoint(path)[0].parameters()).detach().flatten()[0])


def test_a_checkpoint_carries_a_manifest_and_latest_names_the_newest(run):
    newest = latest_checkpoint(run)
    assert newest.name == "step_000003" and (newest / ck.MANIFEST).exists()
    assert _weights_of(newest) == 3.0 and load_checkpoint(newest)[1]["step"] == 3
    assert not list((run / "checkpoints").glob(".*tmp")) and not (run / "checkpoints" / "latest.tmp").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "remove"])
def test_an_unreadable_newest_checkpoint_is_skipped_with_a_warning(run, damage, capsys):
    newest = run / "checkpoints" / "step_000003"
    target = newest / ("policy.safetensors" if damage == "flip" else "trainer.pt")
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # same size, one byte changed: only the checksum sees it
        target.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    else:
        target.unlink()
    path = latest_checkpoint(run)
    assert path.name == "step_000002" and _weights_of(path) == 2.0
    out = capsys.readouterr().out
    assert "skipping checkpoint" in out and str(newest) in out and "step_000002" in out


def test_no_readable_checkpoint_is_an_error_naming_each(run):
    for d in (run / "checkpoints").glob("step_*"):
        (d / "trainer.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no readable checkpoint.*step_000003.*step_000001"):
        latest_checkpoint(run)


def test_a_full_disk_fails_the_save_cleanly_and_keeps_the_previous_checkpoint(run, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", full)
    policy = load_checkpoint(latest_checkpoint(run))[0]
    with pytest.raises(CheckpointError, match=r"step_000004 failed \(No space left on device\); the previous "
                                              r"checkpoint .*step_000003 is intact"):
        save_checkpoint(run, 4, policy, {"learner": {}})
    root = run / "checkpoints"
    assert (root / "latest").read_text().strip() == "step_000003"
    assert not (root / "step_000004").exists() and not list(root.glob(".*tmp"))
    assert latest_checkpoint(run).name == "step_000003"


def test_eval_of_a_run_without_a_readable_checkpoint_is_an_error(run, capsys):
    for d in (run / "checkpoints").glob("step_*"):
        (d / "trainer.pt").write_bytes(b"")
    assert main(["eval", "--preset", "tiny", "env.name=toy", str(run)]) == 2
    assert "no readable checkpoint" in capsys.readouterr().err
