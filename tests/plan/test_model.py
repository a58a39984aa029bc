"""The pipeline model against cases with a closed form, and the runtime's batching rules."""
import dataclasses

import pytest
import simpy

from tristream.plan.machine import Machine
from tristream.plan.model import Workload, _Cores, simulate


def workload(**kw) -> Workload:
    base = dict(mode="sync", num_envs=16, env_workers=1, groups_per_worker=1, chunk_len=4, segment_len=8,
                global_batch=256, update_epochs=3, torch_threads=1)
    return Workload(**(base | kw))


def test_sync_with_one_env_worker_is_rollout_plus_training(costs):
    c, wl = costs(), workload()
    p = simulate(c, wl, Machine(cores=8), warmup=1, steps=2)
    n, L, K = wl.num_envs, 40, wl.chunk_len
    samples = n * L // K  # decisions
    rollout = n * c.env_reset_s + (L // K) * (n * K * c.env_step_s + c.forward(n))
    train = samples * c.learner_prepare_s + wl.update_epochs * samples * c.learner_step(1, 1)
    assert p.step_s[1:] == pytest.approx([rollout + train] * 2, rel=1e-9)
    assert p.env_steps_per_s == pytest.approx(n * L / (rollout + train), rel=1e-9)
    assert p.inference_batch_mean == n  # lockstep: every env in one batch
    assert p.policy_lag_max == 0


def test_async_is_bounded_by_its_slowest_stage(costs):
    c = costs(learner_step_s={1: 2.56})  # training a step takes ~4x its rollout
    wl = workload(mode="async", batch_max=8, max_lag=2, update_epochs=1)
    p = simulate(c, wl, Machine(cores=8), warmup=2, steps=6)
    samples = wl.num_envs * 40 // wl.chunk_len
    learner_bound = wl.num_envs * 40 / (samples * (c.learner_prepare_s + c.learner_step(1, 1)))
    assert p.env_steps_per_s <= learner_bound * (1 + 1e-9)
    assert p.env_steps_per_s >= 0.9 * learner_bound  # the rollouts hide behind training
    sync = simulate(c, dataclasses.replace(wl, mode="sync", batch_max=0), Machine(cores=8), warmup=2, steps=6)
    assert sync.env_steps_per_s < 0.85 * p.env_steps_per_s


def test_no_mode_beats_the_env_workers_alone(costs):
    c = costs(learner_step_s={1: 0.001})
    for mode in ("sync", "async-rollout", "async"):
        wl = workload(mode=mode, env_workers=2, groups_per_worker=2, num_envs=32, batch_max=0 if mode == "sync" else 8)
        p = simulate(c, wl, Machine(cores=8), warmup=1, steps=3)
        per_worker = 16 * 40 / (16 * c.env_reset_s + 16 * 40 * c.env_step_s)
        assert p.env_steps_per_s <= 2 * per_worker * (1 + 1e-9), mode


def test_two_roles_on_one_core_share_it():
    sim, busy = simpy.Environment(), {"a": 0.0, "b": 0.0}
    cores, done = _Cores(sim, 1, busy), {}

    def role(name):
        yield from cores.work(name, 1.0)
        done[name] = sim.now
    sim.process(role("a"))
    sim.process(role("b"))
    sim.run()
    assert done["a"] == pytest.approx(2.0, abs=0.01) and done["b"] == pytest.approx(2.0, abs=0.01)
    assert busy == pytest.approx({"a": 2.0, "b": 2.0}, abs=0.01)  # wall time inside the work, as a trace span


def test_busy_cores_run_at_the_measured_co_run_speed():
    sim, busy = simpy.Environment(), {"a": 0.0, "b": 0.0}
    cores, done = _Cores(sim, 2, busy, slowdown=lambda k: {1: 1.0, 2: 1.5}[k]), {}

    def role(name, seconds):
        yield from cores.work(name, seconds)
        done[name] = sim.now
    sim.process(role("a", 1.0))
    sim.process(role("b", 1.0))
    sim.run()
    assert done == pytest.approx({"a": 1.5, "b": 1.5}, abs=0.01)


def test_a_two_thread_learner_is_faster_on_free_cores_only(costs):
    c = costs()
    one, two = (simulate(c, workload(torch_threads=k), Machine(cores=8), warmup=1, steps=1) for k in (1, 2))
    assert two.env_steps_per_s > 1.2 * one.env_steps_per_s
    # on one core the two threads take turns: no faster than one thread there
    one_1, two_1 = (simulate(c, workload(torch_threads=k), Machine(cores=1), warmup=1, steps=1) for k in (1, 2))
    assert two_1.env_steps_per_s <= one_1.env_steps_per_s * (1 + 1e-6)


def test_dynamic_batches_never_split_a_request(costs):
    p = simulate(costs(), workload(mode="async-rollout", env_workers=2, groups_per_worker=2, num_envs=32, batch_max=4),
                 Machine(cores=8), warmup=1, steps=1)
    assert p.inference_batch_mean >= 8  # groups of 8 envs: a batch holds at least one whole request


def test_the_lag_bound_holds(costs):
    c = costs(learner_step_s={1: 2.56})
    for lag in (0, 1, 2):
        p = simulate(c, workload(mode="async", batch_max=8, max_lag=lag), Machine(cores=8), warmup=1, steps=4)
        assert p.policy_lag_max <= lag


def test_latency_slows_lockstep_more_than_independent_groups(costs):
    c = costs(env_step_s=1e-5, learner_step_s={1: 0.01})
    kw = dict(env_workers=2, groups_per_worker=4, num_envs=32, step_latency_ms=5.0, latency_sigma=1.0)
    sync = simulate(c, workload(mode="sync", **kw), Machine(cores=8), warmup=1, steps=2)
    rollout_async = simulate(c, workload(mode="async-rollout", batch_max=4, **kw), Machine(cores=8), warmup=1, steps=2)
    assert rollout_async.env_steps_per_s > 1.1 * sync.env_steps_per_s


def test_fixed_horizon_episodes_carry_over_and_reset_only_when_they_end(costs):
    # 24-step rollouts of 40-step episodes: every other global step an episode ends mid-rollout
    c = costs(episode_steps=[40], learner_step_s={1: 1e-12})
    wl = workload(steps_per_env=6, update_epochs=1)  # 6 decisions x 4 env steps = 24 env steps per env and step
    p = simulate(c, wl, Machine(cores=8), warmup=1, steps=4)
    assert p.env_steps == 4 * 16 * 24  # fixed horizon: the same env steps every global step
    first = 16 * c.env_reset_s  # only the first rollout resets at its start; the others go on
    assert p.step_s[0] == pytest.approx(first + 6 * (16 * 4 * c.env_step_s + c.forward(16)) + 16 * 6 * 1e-4, rel=1e-9)
    assert p.step_s[1] == pytest.approx(p.step_s[0] - first, rel=1e-9)


def test_no_episode_ended_in_the_probe_means_episodes_longer_than_any_rollout(costs):
    p = simulate(costs(episode_steps=[]), workload(steps_per_env=5), Machine(cores=8), warmup=1, steps=2)
    assert p.env_steps == 2 * 16 * 5 * 4


def test_several_episodes_per_env_and_grpo_groups(costs):
    c = costs(episode_steps=[20, 40])
    wl = workload(episodes_per_env=2, by_group=True, group_size=4, mode="async", batch_max=8, max_lag=1)
    p = simulate(c, wl, Machine(cores=8), warmup=1, steps=2)
    assert 2 * 16 * 2 * 20 <= p.env_steps <= 2 * 16 * 2 * 40  # two whole episodes per env and step


def test_stale_mini_batches_pay_a_proximal_forward_for_every_sample(costs):
    c = costs(learner_step_s={1: 2.56}, learner_proximal_s=0.01)
    wl = workload(mode="async", batch_max=8, max_lag=2, update_epochs=1)
    fresh = simulate(c, dataclasses.replace(wl, recompute_stale=False), Machine(cores=8), warmup=2, steps=4)
    stale = simulate(c, wl, Machine(cores=8), warmup=2, steps=4)
    always = simulate(c, dataclasses.replace(wl, always_proximal=True, max_lag=0), Machine(cores=8), warmup=2, steps=4)
    assert stale.policy_lag_max > 0 and stale.env_steps_per_s < fresh.env_steps_per_s
    samples = 16 * 10  # every pass-1 sample recomputed: 0.01 s each, on top of the learner-bound step
    assert always.step_s[-1] == pytest.approx(simulate(c, dataclasses.replace(wl, max_lag=0), Machine(cores=8),
                                                       warmup=2, steps=4).step_s[-1] + samples * 0.01, rel=0.05)


def test_a_gpu_runs_the_policy_and_the_cpu_the_rest(costs):
    c = costs(serve_overhead_s=0.001)
    cpu = simulate(c, workload(), Machine(cores=8), warmup=1, steps=1)
    gpu = simulate(c, workload(), Machine(cores=8, gpus=1, gpu_speedup=10.0), warmup=1, steps=1)
    # the forwards and optimizer steps take a tenth; env steps, resets and the worker's overhead do not
    n, decisions, samples = 16, 10, 160
    saved = 0.9 * (decisions * c.forward(n) + 3 * samples * c.learner_step(1, 1))
    assert cpu.step_s[-1] - gpu.step_s[-1] == pytest.approx(saved, rel=1e-6)


def test_env_workers_on_other_nodes_send_over_the_link(costs):
    c = costs(segment_bytes=1e6)
    wl = workload(env_workers=2, num_envs=32)
    one = simulate(c, wl, Machine(cores=8), warmup=1, steps=1)
    two = simulate(c, wl, Machine(cores=8, nodes=2, link_gbps=1.0), warmup=1, steps=1)
    assert two.step_s[-1] > one.step_s[-1] + 0.1  # 16 envs x 1 MB per decision at 1 Gb/s: 0.128 s a decision


def test_shard_plan_must_divide(costs):
    with pytest.raises(ValueError, match="num_envs=10"):
        simulate(costs(), workload(num_envs=10, env_workers=3), Machine(cores=2))


def test_a_short_mini_batch_pays_the_fixed_part_of_a_step(costs):
    c = costs(learner_step_s={1: 0.3}, learner_step_fixed_s={1: 0.1})
    assert c.learner_step(256, 1) == pytest.approx(0.3)
    assert c.learner_step(64, 1) == pytest.approx(0.1 + 0.2 / 4)
    wl = workload(update_epochs=1)  # 16 envs x 10 decisions = 160 samples: one short mini-batch per pass
    p = simulate(c, wl, Machine(cores=8), warmup=1, steps=1)
    rollout = 16 * c.env_reset_s + 10 * (16 * 4 * c.env_step_s + c.forward(16))
    assert p.step_s[-1] == pytest.approx(rollout + 160 * c.learner_prepare_s + c.learner_step(160, 1), rel=1e-9)


def test_forward_interpolates_and_extrapolates(costs):
    c = costs(forward_s={1: 1.0, 4: 4.0, 8: 6.0})
    assert c.forward(2) == pytest.approx(2.0)
    assert c.forward(6) == pytest.approx(5.0)
    assert c.forward(16) == pytest.approx(10.0)  # the last two sizes' slope


@pytest.mark.parametrize("streamed, overrides", [
    (False, ["algo.advantage=gae"]),
    (True, ["algo.advantage=gae"]),
    (True, ["algo.advantage=grpo", "rollout.group_size=4", "rollout.episodes_per_env=1"]),
])
def test_the_model_cuts_mini_batches_as_the_runtime_does(tiny, streamed, overrides):
    """The model's update and the runtime's StepUpdate, fed the same segments of a real rollout in the same
    arrival order, train mini-batches of the same sizes in the same order (passes 1..update_epochs)."""
    import torch

    from tristream.envs.from_config import env_from_config
    from tristream.plan.measure import probe_config, probe_rollout
    from tristream.plan.model import _Segment, _Update
    from tristream.policies.from_config import build_policy
    from tristream.runtime.learner import Learner
    from tristream.runtime.update import StepUpdate
    cfg = tiny("rollout.num_envs=8", "rollout.episodes_per_env=2", "algo.global_batch=12", "algo.micro_batch=12",
               "algo.update_epochs=3", "algo.target_kl=null", f"runtime.mode={'async' if streamed else 'sync'}",
               *overrides)
    probe = probe_config(cfg)
    spec = env_from_config(cfg.env).spec
    torch.manual_seed(0)
    learner = Learner(build_policy(probe, spec), probe.algo, seed=0)
    _, segments, _ = probe_rollout(probe, spec, learner.policy, learner, log=lambda line: None)
    arrivals = [segments[i:i + 3] for i in range(0, len(segments), 3)]

    real: list[int] = []
    optimizer_step = learner.optimizer_step
    learner.optimizer_step = lambda samples, idx, batch=None: real.append(len(idx)) or optimizer_step(samples, idx, batch)
    update = StepUpdate(learner, envs=range(8) if streamed else None, episodes_per_env=cfg.rollout.episodes_per_env,
                        group_size=cfg.rollout.group_size)
    modelled: list[int] = []
    model = _Update(Workload.from_config(cfg), streamed)
    for batch in arrivals:
        update.add(batch)
        model.add([_Segment(s.env_id, s.length, int(s.env_steps.sum()), 0, 0, s.episode_done, s.rollout_end)
                   for s in batch])
        while streamed and update.pending:
            update.train_step()
        while streamed and model.pending:
            modelled.append(model.next_batch(0)[0])
    update.close()
    model.close()
    while update.pending:
        update.train_step()
    while model.pending:
        modelled.append(model.next_batch(0)[0])
    assert len(real) >= 6 and modelled == real

