import dataclasses
import json

import pytest
import torch

from tristream.config import Config, load_config
from tristream.lm.config import LMConfig
from tristream.lm.model import LM
from tristream.lm.quant import apply_qat, quantize_model
from tristream.lm.tasks import make_task
from tristream.lm.tokenizer import ByteTokenizer
from tristream.lm.train import (
    _bias_rate_factor,
    lr_factor,
    encode,
    exact_match,
    frozen_bias_load,
    heldout,
    load_lm,
    model_config,
    sft_lm,
)
from tristream.metrics.tracker import Tracker, read_metrics

pytestmark = pytest.mark.kernels  # trains or compares float results: `make test` reruns it on other CPU kernels

TOK = ByteTokenizer()


def micro_config_json(tmp_path):
    """A two-layer MoE + MTP model small enough for seconds-long tests."""
    d = LMConfig.preset("tiny").to_dict()
    d.update(hidden_size=32, intermediate_size=64, moe_intermediate_size=32, num_hidden_layers=2,
             num_attention_heads=2, q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8,
             v_head_dim=8, n_routed_experts=4, num_experts_per_tok=2)
    path = tmp_path / "micro.json"
    path.write_text(json.dumps(d))
    return path


def lm_cfg(tmp_path, *overrides):
    return load_config(Config, "lm_tiny", [f"lm.config={micro_config_json(tmp_path)}", "lm.digits=2",
                                           "lm.steps=12", "lm.batch_size=16", "lm.eval_every=6",
                                           "lm.eval_problems=8", "lm.log_every=4", "lm.warmup_steps=2",
                                           *overrides])


def test_encode_masks_answer_and_eos_only():
    task = make_task("addition", digits=2)
    probs = task.problems("train", 3, seed=0)
    tokens, mask = encode(probs)
    assert tokens.shape == mask.shape == (3, 1 + 6 + 3 + 1)
    for b, p in enumerate(probs):
        assert TOK.decode(tokens[b].tolist()) == p.prompt + p.answer
        targets = [t for t, m in zip(tokens[b].tolist(), mask[b].tolist()) if m]
        assert targets == TOK.encode(p.answer, eos=True)


def test_lr_schedule_warms_up_then_decays_to_the_floor(tmp_path):
    lm = lm_cfg(tmp_path, "lm.steps=100", "lm.warmup_steps=10", "lm.min_lr_ratio=0.1").lm
    assert lr_factor(0, lm) == pytest.approx(0.1) and lr_factor(9, lm) == pytest.approx(1.0)
    assert lr_factor(10, lm) == pytest.approx(1.0) and lr_factor(100, lm) == pytest.approx(0.1)
    lin = dataclasses.replace(lm, schedule="linear")
    assert lr_factor(55, lin) == pytest.approx(0.1 + 0.9 * 0.5)


def test_bias_rate_follows_the_lr_decay_only_when_asked(tmp_path, monkeypatch):
    lm = lm_cfg(tmp_path, "lm.steps=100", "lm.warmup_steps=10", "lm.min_lr_ratio=0.1").lm
    assert all(_bias_rate_factor(i, lm) == 1.0 for i in (0, 5, 50, 100))  # constant (the default)
    dec = dataclasses.replace(lm, router_bias_schedule="lr_decay")
    assert _bias_rate_factor(0, dec) == 1.0 and _bias_rate_factor(9, dec) == 1.0  # warm-up: full rate
    assert _bias_rate_factor(55, dec) == pytest.approx(lr_factor(55, dec)) and _bias_rate_factor(100, dec) == pytest.approx(0.1)
    rates = []  # what sft_lm hands the model after each optimizer step
    original = LM.update_router_bias
    monkeypatch.setattr(LM, "update_router_bias", lambda self, rate=None: rates.append(rate) or original(self, rate))
    cfg = lm_cfg(tmp_path, "lm.router_bias_schedule=lr_decay", "lm.router_bias_rate=0.02", "lm.steps=6",
                 "lm.warmup_steps=2", "lm.eval_every=100")
    sft_lm(cfg, tmp_path / "run", progress=False)
    assert rates == pytest.approx([0.02 * _bias_rate_factor(i, cfg.lm) for i in range(6)])
    assert rates[0] == rates[2] == 0.02 and rates[-1] < rates[3] < 0.02  # full until the decay starts


def test_model_config_uses_byte_vocab_and_run_bias_rate(tmp_path):
    cfg = model_config(lm_cfg(tmp_path, "lm.router_bias_rate=0.05").lm)
    assert cfg.vocab_size == TOK.vocab_size and cfg.router_bias_update_rate == 0.05
    default = LMConfig.preset("tiny").router_bias_update_rate
    assert model_config(lm_cfg(tmp_path, "lm.router_bias_rate=null").lm).router_bias_update_rate == default


def test_sft_trains_logs_saves_and_reloads(tmp_path):
    cfg = lm_cfg(tmp_path, "lm.router_bias_rate=0.01")
    tracker = Tracker(tmp_path / "run", tensorboard=False)
    model = sft_lm(cfg, tmp_path / "run", tracker=tracker, progress=False)
    tracker.close()
    rows = read_metrics(tmp_path / "run", "sft")
    assert [r["step"] for r in rows] == [4, 8, 12]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert {"ce", "mtp_ce", "lr", "grad_norm", "load_max_mean", "load_max_mean_worst", "load_window_max_mean"} <= set(rows[0])
    assert [r["step"] for r in read_metrics(tmp_path / "run", "eval")] == [6, 12]
    biases = torch.stack([m.router.e_score_correction_bias for m in model.moe_layers()])
    assert biases.abs().max() > 0  # the aux-loss-free update ran
    result = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert {"fp32", "fake_int4", "int8", "int4"} <= set(result) and result["heldout_problems"] == 8
    assert result["load_max_mean"]["all_window_worst_max"] >= 1.0
    loaded, meta = load_lm(tmp_path / "run")
    assert meta["lm"]["digits"] == 2
    tok = torch.randint(0, 256, (2, 7))
    with torch.no_grad():
        assert torch.equal(loaded(tok).logits, model.eval()(tok).logits)


def test_router_bias_stays_zero_without_balancing(tmp_path):
    model = sft_lm(lm_cfg(tmp_path, "lm.router_bias_rate=0", "lm.steps=3", "lm.eval_every=100"),
                   tmp_path / "run", progress=False)
    assert all(m.router.e_score_correction_bias.abs().max() == 0 for m in model.moe_layers())


def test_frozen_bias_load_measures_batches_and_changes_nothing(tmp_path):
    cfg = lm_cfg(tmp_path)
    model, task = LM(model_config(cfg.lm)).eval(), make_task("addition", digits=2)
    routers = [m.router for m in model.moe_layers()]
    for r in routers:
        r.load.fill_(5)
    t = frozen_bias_load(model, task, batches=3, batch_size=8)
    assert t.shape == (3, len(routers)) and (t >= 1.0).all() and not model.training
    assert all(int(r.load.sum()) == 5 * r.load.numel() for r in routers)  # counters as they were
    assert all(r.e_score_correction_bias.abs().max() == 0 for r in routers)
    for r in routers:  # a bias no score can overcome: every token on experts 0 and 1 of 4 -> max/mean 2
        r.e_score_correction_bias.copy_(torch.tensor([10.0, 10.0, 0.0, 0.0]))
    assert torch.allclose(frozen_bias_load(model, task, batches=2, batch_size=8), torch.tensor(2.0))


def test_frozen_bias_example_runs_on_a_saved_lm(tmp_path, capsys):
    from examples.lm_load_frozen_bias import main
    from tristream.lm.train import save_lm
    cfg = lm_cfg(tmp_path)
    save_lm(LM(model_config(cfg.lm)), tmp_path / "lm", cfg)
    main([str(tmp_path / "lm"), "--batches", "2", "--batch-size", "4"])
    assert "2 batches of 4 problems, router bias frozen" in capsys.readouterr().out


def test_qat_run_fake_quant_equals_its_int4_export(tmp_path):
    """What QAT trains against is what the export computes: same logits, same greedy answers."""
    model = sft_lm(lm_cfg(tmp_path, "lm.qat=int4", "lm.qat_group_size=8", "lm.steps=4", "lm.eval_every=100"),
                   tmp_path / "run", progress=False)
    fresh, _ = load_lm(tmp_path / "run")
    fake = apply_qat(fresh, 4, 8)
    real = quantize_model(load_lm(tmp_path / "run")[0], 4, 8)
    tok = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        assert torch.allclose(fake(tok).logits, real(tok).logits, atol=1e-4)
    task = make_task("addition", digits=2)
    probs = heldout(task, 8)
    assert exact_match(fake, task, probs)["completions"] == exact_match(real, task, probs)["completions"]
    assert isinstance(model, LM)


def test_init_continues_from_a_saved_lm(tmp_path):
    first = sft_lm(lm_cfg(tmp_path, "lm.steps=2", "lm.eval_every=100"), tmp_path / "a", progress=False)
    cont = lm_cfg(tmp_path, f"lm.init={tmp_path / 'a'}", "lm.steps=0", "lm.eval_every=100", "lm.router_bias_rate=0")
    second = sft_lm(cont, tmp_path / "b", progress=False)
    assert second.cfg.router_bias_update_rate == 0
    tok = torch.randint(0, 256, (1, 5))
    with torch.no_grad():
        assert torch.equal(first.eval()(tok).logits, second.eval()(tok).logits)


def test_training_batches_use_zero_digit_sampling_and_evaluation_does_not(tmp_path, monkeypatch):
    from tristream.lm.tasks import ArithmeticTask
    calls = []
    original = ArithmeticTask.problems

    def recording(self, split, n, seed, zero_digit_prob=0.0):
        calls.append((split, zero_digit_prob))
        return original(self, split, n, seed, zero_digit_prob)

    monkeypatch.setattr(ArithmeticTask, "problems", recording)
    sft_lm(lm_cfg(tmp_path, "lm.steps=2", "lm.eval_every=100", "lm.zero_digit_prob=0.4"), tmp_path / "z",
           progress=False)
    assert ("train", 0.4) in calls and calls.count(("train", 0.4)) == 2
    assert {p for s, p in calls if s == "heldout"} == {0.0}
    with pytest.raises(ValueError, match="lm.zero_digit_prob"):
        lm_cfg(tmp_path, "lm.zero_digit_prob=1.5")
