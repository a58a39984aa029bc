"""DPO of a language model: pair files, sequence log-probs, rejection-sampled pairs, and training that moves
the implicit reward the right way."""
import dataclasses
import json
import re

import pytest
import torch

from tristream.config import Config, load_config
from tristream.lm.config import LMConfig
from tristream.lm.dpo import (Pair, dpo_train, read_pairs, reference_logp, rejection_pairs, sequence_logp,
                              write_pairs)
from tristream.lm.model import LM
from tristream.lm.tasks import Problem
from tristream.lm.tokenizer import ByteTokenizer

TOK = ByteTokenizer()


def _model(seed=0):
    torch.manual_seed(seed)
    cfg = dataclasses.replace(LMConfig.preset("tiny"), vocab_size=TOK.vocab_size, hidden_size=32, intermediate_size=64,
                              moe_intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, q_lora_rank=32,
                              kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
                              n_routed_experts=4, num_experts_per_tok=2)
    return LM(cfg).eval()


def test_pair_files_round_trip_and_bad_lines_are_named(tmp_path):
    pairs = [Pair("12+34=", "64", "46"), Pair("rev:ab=", "ba", "ab")]
    path = write_pairs(pairs, tmp_path / "p.jsonl")
    assert read_pairs(path) == pairs
    good = json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"})
    cases = {"{not json": "not valid JSON", json.dumps([1]): "expected an object",
             json.dumps({"prompt": "a", "chosen": "b"}): "missing key(s) rejected",
             json.dumps({"prompt": "a", "chosen": "", "rejected": "c"}): "chosen must be non-empty",
             json.dumps({"prompt": "a", "chosen": "b", "rejected": "b"}): "the same completion"}
    for line, message in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text(f"{good}\n\n{line}\n")
        with pytest.raises(ValueError, match=rf"bad.jsonl:3: .*{re.escape(message)}"):
            read_pairs(bad)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no pairs"):
        read_pairs(tmp_path / "empty.jsonl")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_pairs(tmp_path / "missing.jsonl")


def test_sequence_logp_sums_the_completion_and_eos_tokens():
    model = _model()
    prompts, completions = ["12+34=", "rev:abc="], ["46", "cba"]
    got = sequence_logp(model, prompts, completions)
    for b, (p, c) in enumerate(zip(prompts, completions)):  # one row at a time, token by token
        ids = TOK.encode(p, bos=True) + TOK.encode(c, eos=True)
        logits = model(torch.tensor([ids])).logits[0].float()
        logits[:, [TOK.PAD, TOK.BOS]] = float("-inf")
        logp = torch.log_softmax(logits, -1)
        start = len(TOK.encode(p, bos=True))
        expect = sum(logp[t - 1, ids[t]] for t in range(start, len(ids)))
        assert got[b].item() == pytest.approx(expect.item(), abs=1e-4)


class _FirstCharTask:
    """A checker a random model satisfies about half the time: right when the first character's code is even."""

    def problems(self, split, n, seed, **_):
        return [Problem(f"q{i}=", "0") for i in range(n)]

    def reward(self, prompt, completion):
        return float(bool(completion) and ord(completion[0]) % 2 == 0)


def test_rejection_sampling_pairs_a_right_and_a_wrong_completion_of_one_prompt():
    model = _model()
    task = _FirstCharTask()
    pairs, stats = rejection_pairs(model, task, prompts=24, samples_per_prompt=8, max_new_tokens=3, seed=1)
    assert pairs and stats["pairs"] == len(pairs) <= 24
    assert 0 < stats["sample_accuracy"] < 1
    for p in pairs:
        assert task.reward(p.prompt, p.chosen) == 1.0 and task.reward(p.prompt, p.rejected) == 0.0
    again, _ = rejection_pairs(model, task, prompts=24, samples_per_prompt=8, max_new_tokens=3, seed=1)
    assert again == pairs  # seeded


def test_dpo_raises_the_margin_against_a_frozen_reference(tmp_path):
    model = _model()
    pairs = [Pair(f"{a}{b}+{b}{a}=", f"{(a + b) % 10}{(a + b) % 10}0", f"{a}{b}9") for a in range(4) for b in range(4)]
    ref = reference_logp(model, pairs)
    d = load_config(Config, "lm_text", ["dpo.steps=30", "dpo.batch_size=8", "dpo.lr=3e-3", "dpo.warmup_steps=2",
                                        "dpo.log_every=10"]).dpo
    model, rows = dpo_train(model, pairs, d, seed=0, progress=False)
    assert [r["step"] for r in rows] == [10, 20, 30]
    assert rows[0]["reward_margin"] < rows[-1]["reward_margin"] and rows[-1]["reward_accuracy"] > 0.9
    chosen, rejected = reference_logp(model, pairs)
    assert ((chosen - ref[0]) - (rejected - ref[1])).mean() > 0  # chosen gained on rejected, relative to the reference
    with pytest.raises(ValueError, match="at least one pair"):
        dpo_train(model, [], d, progress=False)
