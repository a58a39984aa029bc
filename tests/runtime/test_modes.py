"""The three scheduling modes: the step update fed in pieces or at once, the lag bound, and async with lag 0
against sync."""
import numpy as np
import pytest

from tristream.metrics.tracker import read_metrics
from tristream.runtime.learner import Learner
from tristream.policies.from_config import build_policy
from tristream.runtime.update import StepUpdate
from tristream.workflow.rl import rl_train
from tests.runtime.test_learner import _segments
from tristream.envs import make_env
from tests.conftest import RUN_CLOCKS


def _spec(cfg):
    return make_env(cfg.env.name, image_size=cfg.env.image_size).spec


def _stream(tiny, *overrides):
    """A StepUpdate on a fresh learner (global batch 5), and 8 test segments of n samples in all."""
    cfg = tiny("algo.global_batch=5", "algo.micro_batch=2", *overrides)
    env = make_env("toy", image_size=16)
    segs = _segments(env, n_segments=8, rng=np.random.default_rng(1))
    learner = Learner(build_policy(cfg, env.spec), cfg.algo)
    return learner, StepUpdate(learner, envs=range(8)), segs, sum(s.length for s in segs)


@pytest.mark.parametrize("chunks", [[1, 1, 1, 1, 1, 1, 1, 1], [3, 5], [8]])
def test_streaming_steps_once_per_global_batch_whatever_the_chunks(tiny, chunks):
    learner, stream, segs, n = _stream(tiny, "algo.update_epochs=2")
    i = 0
    for c in chunks:
        stream.add(segs[i:i + c])
        i += c
    stats = stream.finish()
    assert stats["samples"] == n
    assert learner.optimizer_steps == 2 * -(-n // 5)
    assert learner.version == 1


@pytest.mark.parametrize("extra", [[], ["policy.kwargs.normalize_state=true"], ["algo.shuffle=samples"]])
def test_streamed_update_equals_the_whole_step_update(tiny, extra):
    """Segments that arrive after training began (streamed) are prepared as if they had arrived first: GAE
    bootstraps from the pre-update value function, in eval mode (a state normaliser's running statistics are
    not moved by bootstrapping). The same weights and metrics as feeding the step at once; with
    algo.shuffle=samples too, where streaming only prepares and training waits for the whole step."""
    import copy
    import torch
    learner, whole, segs, n = _stream(tiny, "algo.update_epochs=2", *extra)
    streamed_learner = copy.deepcopy(learner)
    streamed = StepUpdate(streamed_learner, envs=range(8))
    for chunk in (segs[:5], segs[5:]):
        streamed.add(chunk)
        while streamed.pending:  # train on what is ready before the rest arrives
            streamed.train_step()
    # algo.shuffle=samples draws pass 1 from the complete step too, so it waits for the rollout's end
    assert (streamed.optimizer_steps > 0) == ("algo.shuffle=samples" not in extra)
    s_stats = streamed.finish()
    whole.add(segs)
    w_stats = whole.finish()
    assert s_stats == pytest.approx(w_stats, rel=1e-5, abs=1e-7)
    for p, q in zip(streamed_learner.policy.parameters(), learner.policy.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_streaming_honours_target_kl(tiny):
    learner, stream, segs, n = _stream(tiny, "algo.update_epochs=3", "algo.target_kl=1e-9")
    stream.add(segs)
    stats = stream.finish()
    assert learner.optimizer_steps == -(-n // 5) and stats["update_epochs_run"] == 1.0  # one pass, then stop


@pytest.mark.parametrize("lag", [0, 1, 2])
def test_no_sample_older_than_the_lag_bound_is_trained(tiny, tmp_path, lag):
    cfg = tiny("runtime.backend=local", "runtime.mode=async", f"runtime.max_policy_lag={lag}", "train.steps=5",
               "runtime.groups_per_worker=2")
    rl_train(cfg, tmp_path, _spec(cfg), progress=False)
    rows = read_metrics(tmp_path, "train")
    assert len(rows) == 5
    assert max(r["policy_lag_max"] for r in rows) <= lag


TIMINGS = RUN_CLOCKS | {"phase"}  # and a label


def _same_metrics(runs: dict[str, list[dict]], steps: int, exact: bool = False) -> None:
    """Every metric of every step equal across the runs (clocks aside), and the run did real work. Not
    ``exact``: to float rounding, since forward passes over batches of other sizes may round differently."""
    (name_a, a_rows), (name_b, b_rows) = runs.items()
    assert len(a_rows) == len(b_rows) == steps
    for a, b in zip(a_rows, b_rows):
        assert a["optimizer_steps"] >= 4 and a["samples"] > 256, a
        assert set(a) - TIMINGS == set(b) - TIMINGS
        for key in set(a) - TIMINGS:
            if exact:
                assert b[key] == a[key], (key, name_a, a[key], name_b, b[key])
            else:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (key, name_a, a[key], name_b, b[key])


def _realistic(tiny, *overrides):
    """The default global and micro batch (256 / 128) on ~460 samples a step: 2 mini-batches per pass, 2
    passes, several optimizer steps per global step; 32 envs in 2 workers x 2 groups."""
    return tiny("train.steps=3", "rollout.num_envs=32", "runtime.groups_per_worker=2", "env.max_episode_steps=60",
                "algo.global_batch=256", "algo.micro_batch=128", "algo.update_epochs=2", "rollout.group_size=4",
                *overrides)


@pytest.mark.parametrize("advantage,rollout", [("gae", []), ("grpo", []),
                                               ("gae", ["rollout.steps_per_env=25", "rollout.group_size=1"])],
                         ids=["gae", "grpo", "gae-fixed-horizon"])
def test_async_with_zero_lag_trains_exactly_as_sync(tiny, tmp_path, advantage, rollout):
    """Lag-0 async (local processes) batches inference dynamically and trains on each step while its rollout
    still runs; sync (serial) batches in lockstep and feeds the update at once. Each decision's sampling noise
    is keyed by where it sits (shard.noise_key), not by its inference batch, and the update is defined on the
    step's canonical order with bootstrap values of the pre-update policy, so every metric of every step is
    the same. (The serial backend's loop reads every message before it trains, so only processes can overlap.)"""
    rows = {}
    for mode, backend in (("sync", "serial"), ("async", "local")):
        cfg = _realistic(tiny, f"runtime.backend={backend}", f"runtime.mode={mode}", "runtime.max_policy_lag=0",
                         f"algo.advantage={advantage}", *(["algo.loss=grpo"] if advantage == "grpo" else []), *rollout)
        rl_train(cfg, tmp_path / mode, _spec(cfg), progress=False)
        rows[mode] = read_metrics(tmp_path / mode, "train")
    # Whether a step trains before its rollout ends depends on timing (overlap_optimizer_steps, often 1 a step
    # here, 0 on a fast idle machine); the streamed path itself is tested deterministically in
    # test_streamed_update_equals_the_whole_step_update.
    _same_metrics(rows, 3)


@pytest.mark.parametrize("mode", ["sync", "async-rollout"])  # async: sync (serial) vs async (local) above
def test_serial_equals_local(tiny, tmp_path, mode):
    """The roles in one process or in four (two env workers, inference, the learner): the same episodes, the
    same actions (per-decision noise), the same updates (canonical sample order), metric for metric. Async
    at lag 0, so the versions that act are the same too. Sync batches inference identically in both
    (lockstep), so its metrics are bit-identical; the dynamic batcher's batches differ, and with them the
    rounding of a forward pass."""
    rows = {}
    for backend in ("serial", "local"):
        cfg = _realistic(tiny, f"runtime.backend={backend}", f"runtime.mode={mode}", "runtime.max_policy_lag=0")
        rl_train(cfg, tmp_path / backend, _spec(cfg), progress=False)
        rows[backend] = read_metrics(tmp_path / backend, "train")
    _same_metrics(rows, 3, exact=mode == "sync")


@pytest.mark.parametrize("backend", ["serial", "local"])
def test_latency_model_runs_in_every_backend(tiny, tmp_path, backend):
    cfg = tiny(f"runtime.backend={backend}", "runtime.mode=async", "train.steps=2", "runtime.groups_per_worker=2",
               "env.step_latency_ms=1", "env.reset_latency_ms=1")
    rl_train(cfg, tmp_path, _spec(cfg), progress=False)
    rows = read_metrics(tmp_path, "train")
    assert len(rows) == 2 and all(r["episodes"] == 4 for r in rows)


def test_streaming_update_trains_one_optimizer_step_at_a_time(tiny):
    """add() only prepares and queues; each train_step() is one optimizer step; finish() drains the rest."""
    learner, stream, segs, n = _stream(tiny, "algo.update_epochs=2")
    stream.add(segs)
    assert learner.optimizer_steps == 0 and stream.pending  # n // 5 full batches queued
    stream.train_step()
    assert learner.optimizer_steps == 1 and learner.version == 0
    stream.finish()
    assert learner.optimizer_steps == 2 * -(-n // 5) and learner.version == 1 and not stream.pending


def test_async_answers_a_finished_rollout_before_training(tiny, tmp_path):
    """A worker's next rollout (admitted at lag 1) is sent as soon as its RolloutDone is read, before the
    optimizer steps of the batches that arrived with it: the loop reads messages before training."""
    from tristream.runtime.backends import make_backend
    from tristream.runtime.messages import StartRollout
    from tristream.runtime.pipeline import train_loop
    from tristream.policies.from_config import policy_spec
    cfg = tiny("runtime.backend=serial", "runtime.mode=async", "runtime.max_policy_lag=1", "train.steps=3",
               "algo.global_batch=4", "algo.micro_batch=4")
    spec = _spec(cfg)
    policy = build_policy(cfg, spec)
    learner = Learner(policy, cfg.algo)
    backend = make_backend(cfg, spec, policy_spec(policy))
    sent = []  # (global step started, optimizer steps run when it was sent)
    send = backend.send_env_worker

    def record(w, msg):
        if isinstance(msg, StartRollout):
            sent.append((msg.global_step, learner.optimizer_steps))
        send(w, msg)

    backend.send_env_worker = record
    try:
        train_loop(cfg, policy, spec, learner=learner, start_step=0, on_step=lambda s, m: None, backend=backend)
    finally:
        backend.close()
    workers = len(backend.env_workers)
    assert [s for s, _ in sent] == [0] * workers + [1] * workers + [2] * workers
    assert all(opt == 0 for s, opt in sent if s == 1)  # step 0's batches were all still untrained
    assert learner.optimizer_steps > 0 and learner.version == 3


@pytest.mark.parametrize("reference", ["proximal", "behaviour"])
def test_ratio_reference_decides_whether_stale_logprobs_are_recomputed(tiny, reference):
    learner, stream, segs, n = _stream(tiny, f"algo.ratio_reference={reference}")
    learner.version = 1  # the segments come from version 0: stale
    stream.add(segs)
    stream.close()
    stream.train_step()
    batch = stream._trained[0]
    same = bool((batch.proximal_logp == batch.behaviour_logp).all())
    assert same == (reference == "behaviour")


def test_a_trust_region_overshoot_warns_once_naming_the_fixes(tiny, capsys):
    learner, stream, segs, n = _stream(tiny, "algo.loss=fiberpo", "algo.advantage=grpo", "algo.update_epochs=2")
    stream.add(segs)  # behaviour log-probs far from the policy's own: every token outside the radius
    stream.finish()
    out = capsys.readouterr().out
    assert out.count("warning:") == 1 and "algo.lr" in out and "train.rl_gaussian_tokens=dim" in out
    stream = StepUpdate(learner, envs=range(8))
    stream.add(segs)
    stream.finish()
    assert "warning:" not in capsys.readouterr().out  # once per learner


def test_decoupled_ppo_rejects_the_behaviour_reference(tiny):
    from tristream.config import ConfigError
    with pytest.raises((ConfigError, ValueError), match="ratio_reference=behaviour"):
        tiny("algo.loss=decoupled_ppo", "algo.ratio_reference=behaviour")


def test_fiberpo_gives_a_gaussian_head_one_token_per_dimension(tiny, tmp_path):
    cfg = tiny("runtime.backend=serial", "algo.loss=fiberpo", "train.steps=1")
    policy = rl_train(cfg, tmp_path / "run", _spec(cfg), progress=False)
    assert policy.config.gaussian_tokens == "dim" and policy.tokens_per_chunk == policy.chunk_len * _spec(cfg).action_dim
    cfg = tiny("runtime.backend=serial", "algo.loss=fiberpo", "train.steps=1", "train.rl_gaussian_tokens=chunk")
    assert rl_train(cfg, tmp_path / "run2", _spec(cfg), progress=False).tokens_per_chunk == 1


def test_fixed_horizon_runs_n_decisions_per_env_and_carries_episodes_over(tiny, tmp_path):
    """rollout.steps_per_env=N: every env runs exactly N decisions a global step; an episode longer than that
    goes on in the next step (its length and return span steps), bootstrapped at the cut."""
    cfg = tiny("runtime.backend=serial", "rollout.steps_per_env=3", "env.max_episode_steps=20", "train.steps=5")
    rl_train(cfg, tmp_path, _spec(cfg), progress=False)
    rows = read_metrics(tmp_path, "train")
    assert [r["samples"] for r in rows] == [cfg.rollout.num_envs * 3] * 5
    assert rows[0]["episodes"] == 0  # 3 decisions of chunk_len actions: no episode of 20 env steps is over yet
    ended = [r for r in rows if r["episodes"] > 0]
    assert ended and all(r["ep_len"] > 3 * cfg.policy.chunk_len for r in ended)


def test_fixed_horizon_needs_gae_without_groups(tiny):
    with pytest.raises(ValueError, match="rollout.steps_per_env=4 cuts episodes"):
        tiny("rollout.steps_per_env=4", "algo.advantage=grpo", "rollout.group_size=2")


def test_sample_shuffling_mixes_segments_in_later_passes(tiny):
    """algo.shuffle=samples: a later pass's mini-batch holds samples of many segments in no time order; the
    default keeps each segment's samples together (sequence-level losses need them)."""
    for shuffle, mixed in (("segments", False), ("samples", True)):
        learner, stream, segs, n = _stream(tiny, "algo.update_epochs=2", f"algo.shuffle={shuffle}")
        stream.add(segs)
        stream.close()
        while stream._queue:  # pass 1
            stream.train_step()
        stream._start_next_pass()
        rows = np.concatenate([batch.row[idx] for batch, idx in stream._queue])  # the pass's sample order
        runs = np.count_nonzero(np.diff(rows)) + 1  # stretches of one segment
        assert len(rows) == n and (runs > len(set(rows))) == mixed, (shuffle, runs)


def test_sample_shuffling_needs_a_per_token_loss_under_token_mean(tiny):
    with pytest.raises(ValueError, match="algo.shuffle=samples breaks up the sequences that loss 'gspo'"):
        tiny("algo.shuffle=samples", "algo.loss=gspo", "algo.advantage=grpo", "rollout.group_size=2")
    with pytest.raises(ValueError, match="loss 'gspo' with reduction 'token-mean'"):  # its ratio is per sequence
        tiny("algo.shuffle=samples", "algo.loss=gspo", "algo.advantage=grpo", "rollout.group_size=2",
             "algo.loss_reduction=token-mean")
    tiny("algo.shuffle=samples", "algo.loss=grpo", "algo.advantage=grpo", "rollout.group_size=2",
         "algo.loss_reduction=token-mean")
