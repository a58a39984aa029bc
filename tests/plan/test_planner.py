"""The planner proposes only plans that load and fit the memory budget, and keeps the configured one."""
import pytest

from tristream.plan.machine import Machine
from tristream.plan.planner import build, memory_mb, search


def test_every_proposed_plan_validates_and_fits_the_budget(tiny, costs):
    cfg = tiny("runtime.mode=async", "rollout.num_envs=8", "runtime.env_workers=2")
    c = costs(global_batch=cfg.algo.global_batch, episode_steps=[20], process_mb=400.0)
    machine = Machine(cores=4, memory_gb=2.0)  # 4 env workers (4 x 400 MB + 700 MB) do not fit, 2 do
    ranked = search(cfg, c, machine, warmup=1, steps=2)
    assert any(not p.overrides for p in ranked)  # the configured plan is a candidate
    assert all(build(cfg, p.overrides) is not None for p in ranked)
    workers = {p.overrides.get("runtime.env_workers", 2) for p in ranked}
    assert 4 not in workers and {1, 2} <= workers
    assert all(p.memory_mb <= 2048 for p in ranked)
    assert ranked[0].prediction.env_steps_per_s >= max(p.prediction.env_steps_per_s for p in ranked)
    assert memory_mb(c, build(cfg, {"runtime.env_workers": 4})) > 2048


def test_sync_has_no_batcher_or_lag_to_choose(tiny, costs):
    cfg = tiny("runtime.mode=sync", "rollout.num_envs=8")
    ranked = search(cfg, costs(global_batch=cfg.algo.global_batch), Machine(cores=2))
    assert not any("runtime.batch_max" in p.overrides or "runtime.max_policy_lag" in p.overrides for p in ranked)


def test_a_budget_nothing_fits_is_an_error_naming_it(tiny, costs):
    cfg = tiny("rollout.num_envs=8")
    with pytest.raises(ValueError, match="memory_gb"):
        search(cfg, costs(global_batch=cfg.algo.global_batch), Machine(cores=2, memory_gb=0.1))
