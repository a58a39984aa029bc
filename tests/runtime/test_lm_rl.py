"""Language RL on the runtime: every language loss in every mode, serial equals local, and the LM's
tokens as the losses' log-prob units."""
import math

import pytest

from tristream.metrics.tracker import read_metrics
from tristream.runtime.roles import make_env
from tristream.workflow.rl import rl_train
from tests.runtime.test_backends import _train_rows

LANGUAGE_LOSSES = ["grpo", "gspo", "fiberpo", "fiberpo_domain"]


def _rl(cfg, run_dir):
    spec = make_env(cfg.env).spec
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
