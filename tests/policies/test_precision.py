"""run.precision=bf16: every policy's encoder and trunk run under bfloat16 autocast, while weights, gradients,
log-probs, entropies and values stay fp32 and close to the fp32 policy's."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tristream.envs import make_env
from tristream.envs.base import EnvSpec
from tristream.policies import make_policy
from tristream.types import ObsBatch

PIXELS = EnvSpec(action_dim=2, state_dim=3, camera_names=("top",), image_size=64, max_episode_steps=50)
VLA = dict(conv_channels=(8, 8, 16), conv_strides=(2, 2, 1), hidden_dim=64, lang_dim=32, proprio_dim=16, chunk_len=3)


def _obs(spec: EnvSpec, b: int) -> dict:
    g = np.random.default_rng(0)
    return {"images": g.integers(0, 256, (b, spec.num_cameras, spec.image_size, spec.image_size, 3), dtype=np.uint8),
            "state": g.normal(size=(b, spec.state_dim)).astype(np.float32),
            "instruction": ["reach the red block"] * b}


def _pair(name: str, spec: EnvSpec, **kwargs):
    torch.manual_seed(0)
    fp32 = make_policy(name, spec, **kwargs)
    bf16 = copy.deepcopy(fp32)
    bf16.precision = "bf16"
    return fp32, bf16


@pytest.mark.parametrize("name,kwargs", [("cnn", {}), ("mlp", {}), ("vla", VLA)])
def test_bf16_outputs_and_gradients_are_fp32_and_close(name, kwargs):
    spec = PIXELS
    fp32, bf16 = _pair(name, spec, **kwargs)
    obs = _obs(spec, 16)
    act = fp32.act(obs)
    ref, out = fp32.evaluate(obs, act.actions), bf16.evaluate(obs, act.actions)
    for a, b in ((ref.logp, out.logp), (ref.entropy, out.entropy), (ref.value, out.value)):
        assert b.dtype == torch.float32
        torch.testing.assert_close(b, a, atol=0.05 * (1 + a.abs().max().item()), rtol=0.02)
    if name != "mlp":  # the mlp policy has nothing to autocast (no encoder): it stays exactly fp32
        assert not torch.equal(out.logp, ref.logp) or not torch.equal(out.value, ref.value)  # bf16 did run
    else:
        assert torch.equal(out.logp, ref.logp)
    (out.logp.sum() + out.value.sum()).backward()
    grads = [p.grad for p in bf16.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    sampled = bf16.act(obs)
    assert sampled.actions.dtype == sampled.logp.dtype == torch.float32


@pytest.mark.kernels
def test_bf16_language_policy_scores_what_it_samples():
    """The LM under autocast: behaviour log-probs from generation and the teacher-forced ones stay fp32 and
    agree to bf16's precision."""
    env = make_env("text")
    fp32, bf16 = _pair("lm", env.spec)
    obs = ObsBatch.stack([env.reset(seed=i) for i in range(8)]).as_dict()
    out = bf16.act(obs)
    bf16.train()
    ev = bf16.evaluate(obs, out.actions)
    mask = bf16.token_mask(out.actions) > 0
    assert ev.logp.dtype == out.logp.dtype == torch.float32
    assert (ev.logp - out.logp)[mask].abs().max() < 0.1
    ref = fp32.evaluate(obs, out.actions)
    assert (ev.logp - ref.logp)[mask].abs().max() < 0.1


def test_precision_is_set_on_rl_policies_and_validated(tiny):
    from tristream.policies.from_config import apply_rl_options, build_policy
    cfg = tiny("run.precision=bf16")
    policy = build_policy(cfg, make_env("toy", image_size=cfg.env.image_size).spec)
    assert policy.precision == "fp32"  # SFT and evaluation build it so
    apply_rl_options(cfg, policy)
    assert policy.precision == "bf16"
    with pytest.raises(ValueError, match="run.precision"):
        tiny("run.precision=fp16")


@pytest.mark.slow  # 10 s or more (make test-fast skips it)
def test_rl_trains_in_bf16_on_local_processes(tiny, tmp_path):
    """The learner and the inference process both run the bf16 policy; the run trains and checkpoints."""
    from tristream.cli import main
    from tristream.metrics.tracker import read_metrics
    from tristream.policies.from_config import build_policy
    from tristream.policies.io import save_policy
    cfg = tiny()
    save_policy(build_policy(cfg, make_env("toy", image_size=cfg.env.image_size).spec), tmp_path / "init")
    assert main(["train", "--preset", "tiny", "env.name=toy", "--no-progress", f"run.dir={tmp_path}", "run.name=rl",
                 f"train.init={tmp_path / 'init'}", "runtime.backend=local", "runtime.mode=async",
                 "run.precision=bf16", "train.steps=3", "eval.episodes=2", "eval.videos=0"]) == 0
    rows = read_metrics(tmp_path / "rl", "train")
    assert len(rows) == 3 and all(np.isfinite(r["policy_loss"]) and np.isfinite(r["grad_norm"]) for r in rows)
    assert "precision: bf16" in (tmp_path / "rl" / "config.yaml").read_text()
