"""Backends: resume continues exactly; inference builds the learner's architecture. (Serial equals local:
tests/runtime/test_modes.py.)"""

import pytest

from tristream.envs import make_env
from tristream.metrics.tracker import read_metrics
from tristream.workflow.rl import rl_train
from tests.conftest import RUN_CLOCKS



def _train_rows(run_dir):
    return [{k: v for k, v in r.items() if k not in RUN_CLOCKS} for r in read_metrics(run_dir, "train")]


def _run(cfg, run_dir, resume=False):
    spec = make_env(cfg.env.name, image_size=cfg.env.image_size).spec
    return rl_train(cfg, run_dir, spec, resume=resume, progress=False)


def test_resume_continues_exactly(tiny, tmp_path):
    full = tiny("runtime.backend=serial", "train.steps=4", "train.save_every=2")
    _run(full, tmp_path / "full")
    part = tiny("runtime.backend=serial", "train.steps=2", "train.save_every=2")
    _run(part, tmp_path / "split")
    _run(full, tmp_path / "split", resume=True)
    assert _train_rows(tmp_path / "split") == _train_rows(tmp_path / "full")


def test_resume_past_a_corrupt_newest_checkpoint_retrains_from_the_one_before(tiny, tmp_path, capsys):
    """The newest checkpoint is truncated (a crash or a full disk while copying it): --resume warns, starts from
    the newest readable one and trains the lost steps again, exactly, and metrics.jsonl holds each step once."""
    cfg = tiny("runtime.backend=serial", "train.steps=4", "train.save_every=1")
    _run(cfg, tmp_path / "full")
    _run(tiny("runtime.backend=serial", "train.steps=4", "train.save_every=1"), tmp_path / "split")
    trainer = tmp_path / "split" / "checkpoints" / "step_000004" / "trainer.pt"
    trainer.write_bytes(trainer.read_bytes()[:100])
    capsys.readouterr()
    _run(cfg, tmp_path / "split", resume=True)
    out = capsys.readouterr().out
    assert "skipping checkpoint" in out and "step_000004" in out and "resuming from" in out and "step_000003" in out
    assert "dropped 1 metric rows past global step 3" in out
    assert _train_rows(tmp_path / "split") == _train_rows(tmp_path / "full")


def test_resume_without_checkpoint_names_the_problem(tiny, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no RL checkpoint"):
        _run(tiny(), tmp_path / "empty", resume=True)


def test_rl_from_a_policy_of_another_architecture(tiny, tmp_path):
    """train.init may hold a policy built unlike the config's ``policy`` section: inference processes
    rebuild the learner's architecture (policies.from_config.policy_spec), not the config's, before weights arrive."""
    from tristream.policies import make_policy, save_policy
    cfg = tiny("runtime.backend=local", "train.steps=1")
    spec = make_env(cfg.env.name, image_size=cfg.env.image_size).spec
    init = make_policy("vla", spec, hidden_dim=cfg.policy.hidden_dim // 2, lang_encoder="attention")
    save_policy(init, tmp_path / "init")
    policy = rl_train(cfg, tmp_path / "run", spec, init=tmp_path / "init", progress=False)
    assert policy.config.hidden_dim == cfg.policy.hidden_dim // 2 and policy.config.lang_encoder == "attention"
    assert len(_train_rows(tmp_path / "run")) == 1


def test_policy_kwargs_reach_the_factory(tiny, tmp_path):
    from tristream.policies.from_config import build_policy, policy_spec
    cfg = tiny("policy.kwargs.lang_encoder=attention", "policy.kwargs.word_dim=16")
    spec = make_env(cfg.env.name, image_size=cfg.env.image_size).spec
    p = build_policy(cfg, spec)
    assert (p.config.lang_encoder, p.config.word_dim) == ("attention", 16)
    assert build_policy(cfg, spec, policy_spec(p)).config == p.config
    with pytest.raises(ValueError, match="unknown VLAConfig field"):
        build_policy(tiny("policy.kwargs.no_such_field=1"), spec)
