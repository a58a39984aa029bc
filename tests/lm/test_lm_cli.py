"""`tristream sft` on a language policy and `tristream bench decode`, end to end on a micro model."""
import json

import pytest

from tristream.cli import main
from tests.lm.test_train import micro_config_json

MICRO = ["--preset", "lm_tiny", "--no-progress", "lm.digits=2", "lm.steps=8", "lm.batch_size=16",
         "lm.eval_every=4", "lm.eval_problems=8", "lm.log_every=4"]


def test_sft_lm_then_bench_decode(tmp_path, capsys):
    out = tmp_path / "lm"
    assert main(["sft", *MICRO, f"lm.config={micro_config_json(tmp_path)}", "--out", str(out)]) == 0
    for name in ("lm.safetensors", "lm.json", "eval.json", "metrics.jsonl", "config.yaml"):
        assert (out / name).exists(), name
    assert "SFT language policy saved" in capsys.readouterr().out
    bench = tmp_path / "bench"
    assert main(["bench", "decode", "--checkpoint", str(out), "--problems", "4", "--repeats", "1",
                 "--draft-k", "1,3", "--quant", "int8,int4", "--quant-draft-k", "2", "--batch-size", "1,3",
                 "--out", str(bench)]) == 0
    text = capsys.readouterr().out
    assert "x fp32 plain" in text and str(bench / "decode.json") in text
    result = json.loads((bench / "decode.json").read_text())
    names = ["fp32 plain", "fp32 spec k=1", "fp32 spec k=3", "int8 plain", "int8 spec k=2", "int4 plain", "int4 spec k=2"]
    assert list(result["variants"]) == [f"{n}, batch {b}" for b in (1, 3) for n in names]
    assert set(result["workload"]["kernels"]["int8"]) == {"int8pack"}  # every quantized Linear on the integer kernel
    assert result["kernels"][0]["kernels"] == {"fp32": "F.linear", "int8": "int8pack", "int4": "int4pack"}
    assert "One Linear layer alone" in text
    for name, v in result["variants"].items():
        assert v["same_as_plain"], name  # greedy speculative decoding never changes the output
        assert v["median"] > 0 and len(v["tokens_per_s"]) == 1
        assert v["ms_per_forward"] > 0
    assert result["variants"]["fp32 spec k=3, batch 1"]["acceptance_length"] >= 1.0
    assert result["variants"]["fp32 plain, batch 3"]["agreement_vs_fp32"] == 1.0
    assert result["workload"]["prompts"] == 4
    assert main(["eval", str(out), "--episodes", "6", "lm.qat_group_size=16", "--label", "g16"]) == 0
    ev = json.loads((out / "eval" / "g16.json").read_text())
    assert ev["heldout_problems"] == 6 and ev["group_size"] == 16
    assert {"fp32", "fake_int8", "int8", "fake_int4", "int4"} <= set(ev)


def test_cli_errors_for_lm_commands(tmp_path, capsys):
    assert main(["sft", "--preset", "tiny", "--out", str(tmp_path / "x")]) == 2
    assert "needs --data" in capsys.readouterr().err
    assert main(["bench", "decode", "--out", str(tmp_path / "b")]) == 2
    assert "needs --checkpoint" in capsys.readouterr().err
    assert main(["bench", "decode", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    assert "lm.json" in capsys.readouterr().err
    assert main(["sft", "--preset", "lm_tiny", "lm.qat=int3", "--out", str(tmp_path / "y")]) == 2
    assert "lm.qat" in capsys.readouterr().err
    for option, value, says in (("--quant", "fp32", "--quant fp32: unknown low-bit weights; valid: int8, int4"),
                                ("--quant", "int8,int3", "--quant int3"), ("--draft-k", "1,x", "--draft-k '1,x'"),
                                ("--draft-k", "0,2", "draft lengths are >= 1"),
                                ("--quant-draft-k", "-1", "draft lengths are >= 1"),
                                ("--batch-size", "0", "batch sizes >= 1"), ("--batch-size", "1,a", "--batch-size '1,a'")):
        assert main(["bench", "decode", "--checkpoint", str(tmp_path), option, value, "--out", str(tmp_path / "b")]) == 2
        assert says in capsys.readouterr().err, (option, value)


TEXT = ["--preset", "lm_text", "--no-progress", "lm.steps=4", "lm.batch_size=8", "lm.eval_every=4",
        "lm.eval_problems=8", "lm.log_every=2", "rollout.num_envs=8", "rollout.group_size=4", "algo.global_batch=8",
        "runtime.batch_max=4", "train.steps=2", "eval.episodes=8", "eval.num_envs=4"]


@pytest.mark.slow  # 10 s or more (make test-fast skips it)
def test_language_workflow_sft_then_rl_then_eval(tmp_path, capsys):
    """sft -> train train.init=<sft> -> eval, and the recipe that chains them, on the text env."""
    sft = tmp_path / "sft"
    assert main(["sft", *TEXT, "lm.teacher_error=0.5", "--out", str(sft)]) == 0
    assert (sft / "policy.json").exists() and (sft / "lm.json").exists()
    assert main(["train", *TEXT, f"run.dir={tmp_path}", "run.name=rl", f"train.init={sft}"]) == 0
    out = capsys.readouterr().out
    assert "addition" in out and "sort" in out  # the per-domain table
    assert main(["eval", str(tmp_path / "rl"), "--episodes", "8", "--label", "final"]) == 0  # the run's own config
    final = tmp_path / "rl" / "checkpoints" / "step_000002" / "eval"  # the run's newest checkpoint
    ev = json.loads((final / "final.json").read_text())
    assert set(ev["tasks"]) == {"addition/direct", "addition/think", "reverse/direct", "sort/direct", "count/direct",
                                "count/think"} and ev["episodes"] == 8  # every domain in each of its modes
    assert ev["mean_tokens"] > 0 and "success_per_1k_tokens" in ev["tasks"]["count/think"]
    rows = [json.loads(line) for line in (final / "final_samples.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {"prompt", "completion", "answer", "success", "tokens"} <= set(rows[0])
    pairs = _pairs_file(tmp_path)
    assert main(["train", *TEXT, f"run.dir={tmp_path}", "run.name=recipe", "dpo.steps=2", "dpo.batch_size=2",
                 f"dpo.pairs={pairs}"]) == 0  # SFT -> DPO -> RL -> eval
    assert "acc/1k tok" in capsys.readouterr().out  # the token-efficiency table
    summary = json.loads((tmp_path / "recipe" / "summary.json").read_text())
    assert set(summary["eval"]) == {"sft", "dpo", "rl"} and summary["eval"]["rl"]["episodes"] == 8
    assert (tmp_path / "recipe" / "eval" / "rl_samples.jsonl").exists()
    assert (tmp_path / "recipe" / "dpo" / "policy.json").exists()


def _pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in
                            [("/no_think 1234+1234=", "24680", "24600"), ("/think count:a:aabb=", "1222>2", "1233>3"),
                             ("/no_think rev:abc=", "cba", "abc")]))
    return path


def test_dpo_command_from_a_pairs_file_and_its_errors(tmp_path, capsys):
    sft = tmp_path / "sft"
    assert main(["sft", *TEXT, "--out", str(sft)]) == 0
    out = tmp_path / "dpo"
    assert main(["dpo", *TEXT, "--init", str(sft), "--data", str(_pairs_file(tmp_path)), "--out", str(out),
                 "dpo.steps=3", "dpo.batch_size=2", "dpo.log_every=1"]) == 0
    for name in ("policy.json", "lm.json", "dpo.json", "config.yaml", "metrics.jsonl"):
        assert (out / name).exists(), name
    result = json.loads((out / "dpo.json").read_text())
    assert result["pairs"]["pairs"] == 3 and {"before", "after"} == set(result["heldout_exact_match"])
    assert {"reward_margin", "reward_accuracy", "chosen_logp", "rejected_logp"} <= set(result["last"])
    capsys.readouterr()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1+1=", "chosen": "2"}\n')
    assert main(["dpo", *TEXT, "--init", str(sft), "--data", str(bad), "--out", str(out), "dpo.steps=1"]) == 2
    assert "bad.jsonl:1: missing key(s) rejected" in capsys.readouterr().err
    assert main(["dpo", *TEXT, "--init", str(sft), "--out", str(out), "dpo.steps=0"]) == 2
    assert "dpo.steps" in capsys.readouterr().err
    assert main(["dpo", *TEXT, "--init", str(tmp_path / "nowhere"), "--out", str(out), "dpo.steps=1"]) == 2
    assert "nowhere" in capsys.readouterr().err
    # rejection sampling from a 4-step model: nothing right, so no pair; the error says what to change
    assert main(["dpo", *TEXT, "--init", str(sft), "--out", str(out), "dpo.steps=1", "dpo.prompts=4",
                 "dpo.samples_per_prompt=2"]) == 2
    assert "dpo.prompts" in capsys.readouterr().err


def test_bad_language_settings_fail_naming_what_is_valid(tmp_path, capsys):
    assert main(["sft", "--preset", "lm_tiny", "lm.teacher_error=0.3", "--out", str(tmp_path / "x")]) == 2
    assert "needs a text env" in capsys.readouterr().err
    assert main(["train", *TEXT, f"run.dir={tmp_path}", "env.kwargs.domains=[sort,cont]"]) == 2
    assert "valid domains: addition, reverse, sort, count" in capsys.readouterr().err
