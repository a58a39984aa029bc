"""Cost files: what they must hold, and the workload they belong to."""
import dataclasses
import json

import pytest

from tristream.plan.costs import StageCosts, check_workload, workload_of


def test_round_trip_and_missing_fields(tmp_path, costs):
    c = costs()
    assert StageCosts.from_json(json.loads(json.dumps(c.to_json()))) == c  # JSON keys are strings: sizes come back ints
    broken = c.to_json()
    del broken["env_step_s"], broken["forward_s"]
    with pytest.raises(ValueError, match="env_step_s, forward_s"):
        StageCosts.from_json(broken)
    with pytest.raises(FileNotFoundError, match="plan measure"):
        StageCosts.load(tmp_path / "none.json")


def test_costs_of_another_workload_are_refused(tiny, costs):
    cfg = tiny()
    c = dataclasses.replace(costs(), workload=workload_of(cfg))
    check_workload(c, cfg)  # the same workload: fine
    with pytest.raises(ValueError, match=r"policy.chunk_len=2 \(measured with 4\)"):
        check_workload(c, tiny("policy.chunk_len=2"))
