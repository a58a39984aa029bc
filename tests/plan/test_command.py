"""`tristream plan measure | predict | search` end to end on tiny settings."""
import json
import re

import pytest

from tristream.cli import main

TOY = ["--preset", "tiny", "env.name=toy", "--no-progress"]


@pytest.fixture(scope="module")
def cost_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "costs.json"
    assert main(["plan", "measure", *TOY, "--out", str(path)]) == 0
    return path


def test_measure_writes_every_stage(cost_file, capsys):
    d = json.loads(cost_file.read_text())
    assert d["benchmark"] == "plan_costs" and d["workload"]["env.name"] == "toy"
    assert d["env_step_s"] > 0 and d["learner_step_s"]["1"] > 0 and len(d["forward_s"]) >= 2
    assert all(k in d["meta"] for k in ("commit", "machine", "command"))


def test_predict_prints_every_mode(cost_file, capsys):
    assert main(["plan", "predict", *TOY, "--costs", str(cost_file), "--machine", "cores=2",
                 "--modes", "sync,async,async:runtime.max_policy_lag=0"]) == 0
    out = capsys.readouterr().out
    for mode in ("sync", "async", "async:runtime.max_policy_lag=0"):
        assert re.search(rf"^{re.escape(mode)}\s+\d+", out, re.M), mode


def test_predict_against_a_benchmark_states_the_error(cost_file, tmp_path, capsys):
    bench = tmp_path / "throughput.json"
    bench.write_text(json.dumps({"benchmark": "throughput", "workload": {
        "num_envs": 4, "env_workers": 2, "groups_per_worker": 1, "env": "toy", "warmup_steps": 1, "measured_steps": 2},
        "modes": {"sync": {"median": 100.0}, "async": {"median": 120.0}}}))
    assert main(["plan", "predict", *TOY, "--costs", str(cost_file), "--against", str(bench)]) == 0
    out = capsys.readouterr().out
    assert "error |predicted / measured - 1|: median" in out
    result = json.loads((tmp_path / "prediction.json").read_text())
    assert set(result["modes"]) == {"sync", "async"} and result["modes"]["sync"]["measured"] == 100.0
    # a benchmark of another shard plan is refused, naming the difference
    assert main(["plan", "predict", *TOY, "runtime.groups_per_worker=2", "--costs", str(cost_file),
                 "--against", str(bench)]) == 2
    assert "groups_per_worker=2 (the result file: 1)" in capsys.readouterr().err


def test_search_writes_a_preset_that_loads(cost_file, tmp_path, capsys):
    preset = tmp_path / "planned.yaml"
    # memory_gb: the probe measured the memory of this test process, which holds the whole session's tests
    assert main(["plan", "search", *TOY, "runtime.mode=async", "--costs", str(cost_file), "--machine",
                 "cores=2,memory_gb=256", "--write-preset", str(preset)]) == 0
    out = capsys.readouterr().out
    assert "best plan:" in out and re.search(r"^configured\s+\d+", out, re.M)
    from tristream.config import Config, load_config
    cfg = load_config(Config, str(preset))  # the written preset loads: the best plan, resolved
    assert cfg.runtime.mode == "async" and cfg.env.name == "toy" and cfg.rollout.num_envs == 4


def test_plan_needs_a_cost_file_and_sane_step_counts(capsys):
    assert main(["plan", "predict", *TOY]) == 2
    assert "--costs FILE" in capsys.readouterr().err
    assert main(["plan", "predict", *TOY, "--costs", "x.json", "--measure-steps", "0"]) == 2
    assert "--measure-steps must be >= 1" in capsys.readouterr().err


def test_a_bad_cost_file_is_named(tmp_path, capsys):
    bad = tmp_path / "costs.json"
    bad.write_text("{not json")
    assert main(["plan", "predict", *TOY, "--costs", str(bad)]) == 2
    assert f"cost file {bad} is not valid JSON" in capsys.readouterr().err
    bad.write_text(json.dumps({"env_step_s": 0.001}))
    assert main(["plan", "predict", *TOY, "--costs", str(bad)]) == 2
    assert f"cost file {bad}: missing" in capsys.readouterr().err


@pytest.mark.slow
def test_validate_predicts_each_repeat_from_costs_measured_just_before(tmp_path, capsys):
    out = tmp_path / "validation"
    assert main(["plan", "validate", *TOY, "--modes", "sync,async", "--repeats", "1", "--measure-steps", "1",
                 "--out", str(out)]) == 0
    result = json.loads((out / "validation.json").read_text())
    assert set(result["modes"]) == {"sync", "async"} and result["repeats"] == 1
    for row in result["modes"].values():
        assert row["measured"] > 0 and row["prediction"]["env_steps_per_s"] > 0 and len(row["run_errors"]) == 1
    assert (out / "costs_1.json").is_file() and (out / "repeat_1" / "throughput.json").is_file()
    from tristream.bench.report import render
    assert "| sync |" in render(out / "validation.json")  # `tristream report` renders it
