"""Language RL on the runtime: every language loss in every mode, serial equals local, and the LM's
tokens as the losses' log-prob units."""
import math

import pytest

from tristream.metrics.tracker import read_metrics
from tristream.envs.from_config import env_from_config
from tristream.workflow.rl import rl_train
from tests.runtime.test_backends import _train_rows

LANGUAGE_LOSSES = ["grpo", "gspo", "fiberpo", "fiberpo_domain"]


def _rl(cfg, run_dir):
    spec = env_from_config(cfg.env).spec
    rl_train(cfg, run_dir, spec, progress=False)
    return read_metrics(run_dir, "train")


@pytest.mark.parametrize("mode", ["sync", "async-rollout", "async"])
@pytest.mark.parametrize("loss", LANGUAGE_LOSSES)
def test_every_language_loss_trains_in_every_mode(text, tmp_path, loss, mode):
    rows = _rl(text("runtime.backend=serial", f"runtime.mode={mode}", f"algo.loss={loss}"), tmp_path / "run")
    assert len(rows) == 2
    for r in rows:
        assert r["episodes"] == 8 and r["samples"] == 8 and r["optimizer_steps"] == 2
        assert all(math.isfinite(r[k]) for k in ("policy_loss", "grad_norm", "raw_ratio_mean", "raw_ratio_max",
                                                 "entropy"))
        assert r["policy_lag_max"] <= (1 if mode == "async" else 0)
    assert rows[0]["raw_ratio_mean"] == pytest.approx(1.0, abs=1e-5)  # the first mini-batch is on-policy


def test_serial_and_local_agree_on_the_text_env(text, tmp_path):
    rows = {b: (_rl(text(f"runtime.backend={b}"), tmp_path / b), _train_rows(tmp_path / b))[1]
            for b in ("serial", "local")}
    assert len(rows["serial"]) == 2 and rows["serial"] == rows["local"]


def test_low_bit_and_speculative_rollouts_log_the_mismatch_and_correct_it(text, tmp_path):
    rows = _rl(text("runtime.backend=serial", "rollout.weights=int4", "rollout.speculative_k=2",
                    "algo.rollout_is_cap=2.0", "algo.loss=fiberpo_domain"), tmp_path / "int4")  # a precompute too
    for r in rows:
        assert r["rollout_logp_diff_mean"] > 1e-4 and r["rollout_logp_diff_max"] >= r["rollout_logp_diff_mean"]
        assert r["rollout_kl"] >= 0 and 0 < r["rollout_is_weight_mean"] <= 2.0
    fp32 = _rl(text("runtime.backend=serial", "rollout.speculative_k=2", "algo.rollout_is_cap=2.0"), tmp_path / "fp32")
    assert all(r["rollout_logp_diff_max"] < 1e-4 for r in fp32)  # exact speculative sampling: no mismatch


def test_truncated_importance_weight_by_hand(text):
    import torch

    from tristream.runtime.learner import Learner
    from tristream.policies.from_config import build_policy
    cfg = text("algo.rollout_is_cap=2.0")
    learner = Learner(build_policy(cfg, env_from_config(cfg.env).spec), cfg.algo)
    lay = {"mask": torch.tensor([[1.0, 1.0, 0.0]]), "old": torch.tensor([[0.0, math.log(3.0), 5.0]]),
           "behaviour_logp": torch.zeros(1, 3), "adv": torch.full((1, 3), 0.5)}
    out = learner._mismatch(lay, tokens=2.0)
    lay["adv"] = lay["adv"] * learner._is_weight(lay)  # what _rows does for the loss and any precompute
    assert out["rollout_logp_diff_mean"] == pytest.approx(math.log(3.0) / 2)
    assert out["rollout_logp_diff_max"] == pytest.approx(math.log(3.0))
    assert out["rollout_kl"] == pytest.approx((3.0 - 1.0 - math.log(3.0)) / 2)
    assert out["rollout_is_capped_frac"] == 0.5 and out["rollout_is_weight_mean"] == pytest.approx(1.5)
    assert lay["adv"][0, :2].tolist() == pytest.approx([0.5, 1.0])  # weights min(1, 2) and min(3, 2)


def test_qat_in_rl_makes_the_learner_see_what_int4_rollouts_sample(text, tmp_path):
    """lm.qat=int4: the learner computes through fake-quantized weights, which are the INT4 export's values,
    so the mismatch with INT4 rollouts all but vanishes (without QAT it exceeds 1e-4, above)."""
    rows = _rl(text("runtime.backend=serial", "rollout.weights=int4", "lm.qat=int4"), tmp_path / "qat")
    assert all(r["rollout_logp_diff_max"] < 1e-3 for r in rows)
    assert all(math.isfinite(r["policy_loss"]) for r in rows)


def test_bench_algos_regimes_parse_and_fail_clearly():
    from tristream.bench.algos import parse_regimes
    assert parse_regimes("fp32,int4:rollout.weights=int4:algo.rollout_is_cap=2") == {
        "fp32": [], "int4": ["rollout.weights=int4", "algo.rollout_is_cap=2"]}
    for bad in ("int4:rollout.weights", "a,a", ":x=1"):
        with pytest.raises(ValueError, match="NAME"):
            parse_regimes(bad)
