"""The learner: optimizer steps per global batch, micro-batch invariance, advantages on segments."""
import copy
import dataclasses

import numpy as np
import pytest
import torch

from tristream.algos import LOSSES
from tristream.envs import make_env
from tristream.runtime.learner import Learner
from tristream.runtime.update import update_on
from tristream.policies.from_config import build_policy
from tristream.types import ObsBatch, Segment

pytestmark = pytest.mark.kernels  # trains or compares float results: `make test` reruns it on other CPU kernels


def _segments(env, n_segments=6, rng=None, L=1, K=4, version=0):
    rng = rng or np.random.default_rng(0)
    segs = []
    for i in range(n_segments):
        T = int(rng.integers(1, 6))
        obs = [env.reset(seed=100 + i) for _ in range(T)]
        terminated = bool(i % 3 == 0)
        segs.append(Segment(
            env_id=i, episode_seed=100 + i, task="goto", obs=ObsBatch.stack(obs),
            actions=rng.uniform(-1, 1, (T, K, env.spec.action_dim)).astype(np.float32),
            behaviour_logp=rng.normal(-3, 0.1, (T, L)).astype(np.float32),
            values=rng.normal(0, 1, T).astype(np.float32), policy_version=np.full(T, version),
            rewards=rng.normal(0, 1, T).astype(np.float32), env_steps=np.full(T, K), terminated=terminated,
            truncated=bool(i % 3 == 1), bootstrap_obs=obs[-1], episode_done=i % 3 != 2,
            group_key=(0, "goto", 100 + i // 2)))
    return segs


@pytest.fixture
def setup(tiny):
    cfg = tiny()
    env = make_env("toy", image_size=16)
    torch.manual_seed(0)
    policy = build_policy(cfg, env.spec)
    return cfg, env, policy


def test_one_optimizer_step_per_global_batch(setup):
    cfg, env, policy = setup
    segs = _segments(env)
    n = sum(s.length for s in segs)
    for gb in (1, 3, 7, n, n + 5):
        algo = dataclasses.replace(cfg.algo, global_batch=gb, micro_batch=2, update_epochs=2)
        learner = Learner(copy.deepcopy(policy), algo, seed=0)
        stats = update_on(learner, segs)
        assert learner.optimizer_steps == 2 * -(-n // gb)
        assert stats["samples"] == n and learner.version == 1


@pytest.mark.parametrize("target_kl,epochs", [(None, 4), (1e9, 4), (1e-9, 1)])
def test_target_kl_ends_the_passes_early(setup, target_kl, epochs):
    """The test segments' behaviour log-probs are not the policy's own, so the first pass already measures
    a KL > 1e-9 and stops there; a huge target (or none) runs every pass."""
    cfg, env, policy = setup
    segs = _segments(env)
    n = sum(s.length for s in segs)
    algo = dataclasses.replace(cfg.algo, global_batch=4, micro_batch=2, update_epochs=4, target_kl=target_kl)
    learner = Learner(copy.deepcopy(policy), algo, seed=0)
    stats = update_on(learner, segs)
    assert stats["update_epochs_run"] == epochs and learner.optimizer_steps == epochs * -(-n // 4)


@pytest.mark.parametrize("loss", sorted(LOSSES))  # every registered loss
def test_micro_batch_size_does_not_change_the_update(setup, loss):
    cfg, env, policy = setup
    segs = _segments(env, n_segments=8)
    results = []
    for micro in (1, 3, 1000):
        algo = dataclasses.replace(cfg.algo, loss=loss, global_batch=10, micro_batch=micro, update_epochs=1,
                            advantage="grpo" if loss in ("grpo", "gspo", "fiberpo_domain") else "gae")
        p = copy.deepcopy(policy)
        update_on(Learner(p, algo, seed=0), segs)
        results.append(torch.cat([v.flatten() for v in p.state_dict().values()]))
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("loss", sorted(n for n, spec in LOSSES.items() if spec.per_token))
def test_per_token_losses_train_the_same_on_sample_rows_as_on_segment_rows(setup, loss, monkeypatch):
    """Under token-mean a per-token loss does not see rows: the learner's per-sample layout (no padding)
    takes the same step, with the same statistics, as the segment layout every other loss gets."""
    cfg, env, policy = setup
    segs = _segments(env, n_segments=8)
    algo = dataclasses.replace(cfg.algo, loss=loss, loss_reduction="token-mean", global_batch=10, micro_batch=3,
                               update_epochs=2, dual_clip=3.0, advantage="grpo" if loss == "grpo" else "gae")
    results = []
    for flat in (True, False):
        monkeypatch.setattr(Learner, "rows_are_samples", property(lambda self, flat=flat: flat))
        p = copy.deepcopy(policy)
        stats = update_on(Learner(p, algo, seed=0), segs)
        results.append((torch.cat([v.flatten() for v in p.state_dict().values()]), stats))
    (w_flat, s_flat), (w_rows, s_rows) = results
    assert not torch.equal(w_flat, torch.cat([v.flatten() for v in policy.state_dict().values()]))  # it trained
    torch.testing.assert_close(w_flat, w_rows, atol=1e-6, rtol=1e-5)
    assert s_flat.keys() == s_rows.keys()
    for k in s_flat:
        assert s_flat[k] == pytest.approx(s_rows[k], rel=1e-4, abs=1e-6), k


def test_only_per_token_losses_under_token_mean_lay_samples_out_as_rows(setup):
    cfg, _, policy = setup
    def flat(**kw):
        return Learner(policy, dataclasses.replace(cfg.algo, **kw)).rows_are_samples
    assert flat(loss="ppo") and flat(loss="decoupled_ppo") and flat(loss="grpo", loss_reduction="token-mean")
    assert not flat(loss="grpo")  # seq-mean-token-mean: a row is a sequence
    assert not flat(loss="gspo", loss_reduction="token-mean")  # a sequence-level ratio
    assert not flat(loss="ppo", loss_reduction="seq-mean-token-sum")


def test_gae_bootstraps_on_truncation_not_termination(setup):
    cfg, env, policy = setup
    segs = _segments(env, n_segments=3)
    learner = Learner(policy, dataclasses.replace(cfg.algo, norm_adv=False, gae_lambda=1.0, gamma=0.5), seed=0)
    samples = learner.prepare(segs)
    boot = policy.value(ObsBatch.stack([segs[1].bootstrap_obs]).as_dict()).item()
    s1 = segs[1]  # truncated: the last step's target is r + gamma * V(final obs)
    last = int(np.flatnonzero(samples.row == 1)[-1])
    assert samples.returns[last].item() == pytest.approx(s1.rewards[-1] + 0.5 * boot, abs=1e-5)
    s0 = segs[0]  # terminated: the last step's target is r
    last0 = int(np.flatnonzero(samples.row == 0)[-1])
    assert samples.returns[last0].item() == pytest.approx(s0.rewards[-1], abs=1e-5)


def test_linear_lr_schedule_follows_the_global_step(setup):
    cfg, env, policy = setup
    segs = _segments(env)
    algo = dataclasses.replace(cfg.algo, lr=1e-3, lr_schedule="linear")
    learner = Learner(copy.deepcopy(policy), algo, seed=0, total_steps=4)
    lrs = [update_on(learner, segs)["lr"] for _ in range(4)]
    assert lrs == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(2.5e-4)
    constant = Learner(copy.deepcopy(policy), dataclasses.replace(algo, lr_schedule="constant"), total_steps=4)
    assert [update_on(constant, segs)["lr"] for _ in range(2)] == pytest.approx([1e-3, 1e-3])
    # without a step budget (e.g. a learner built outside rl_train) the schedule cannot apply
    assert Learner(copy.deepcopy(policy), algo).lr() == 1e-3


@pytest.mark.parametrize("key,part", [("log_std_lr_mult", "log_std"), ("value_lr_mult", "value")])
def test_lr_mult_scales_only_its_parameters_step(setup, key, part):
    cfg, env, policy = setup
    segs = _segments(env)
    moved = {}
    for mult in (1.0, 10.0):
        algo = dataclasses.replace(cfg.algo, advantage="gae", lr=1e-3, update_epochs=1, global_batch=10_000,
                                   **{key: mult})
        learner = Learner(copy.deepcopy(policy), algo, seed=0)
        before = {n: p.detach().clone() for n, p in learner.policy.named_parameters()}
        update_on(learner, segs)  # one Adam step: each parameter moves by about its lr
        after = dict(learner.policy.named_parameters())
        moved[mult] = {n: (after[n] - before[n]).abs().max().item() for n in before}
        assert len(learner.optimizer.param_groups) == (1 if mult == 1.0 else 2)
    scaled = [n for n in moved[1.0] if part in n]
    assert scaled
    for n in moved[1.0]:
        if n in scaled:
            assert moved[10.0][n] == pytest.approx(10 * moved[1.0][n], rel=1e-3)
        else:
            assert moved[10.0][n] == pytest.approx(moved[1.0][n], rel=1e-4, abs=1e-9)


def test_critic_warmup_trains_only_the_value_head(setup):
    """The first algo.critic_warmup global steps move the value head alone; then everything learns."""
    cfg, env, policy = setup
    segs = _segments(env)
    algo = dataclasses.replace(cfg.algo, advantage="gae", critic_warmup=2, lr=1e-3)
    learner = Learner(copy.deepcopy(policy), algo, seed=0)
    for step in range(3):
        before = {n: p.detach().clone() for n, p in learner.policy.named_parameters()}
        assert learner.warming_up == (step < 2)
        update_on(learner, segs)
        changed = {n for n, p in learner.policy.named_parameters() if not torch.equal(p, before[n])}
        value = {n for n in before if "value" in n}
        assert changed == value if step < 2 else changed == set(before)
    grpo = Learner(copy.deepcopy(policy), dataclasses.replace(algo, advantage="grpo"), seed=0)
    assert not grpo.warming_up  # no critic to warm up


def test_grpo_batch_std_divides_group_centred_advantages_by_one_std(setup):
    """grpo_std_level=batch: each episode's return minus its group's mean, divided by the std of those
    centred advantages over the step's samples (LitePPO); "group" divides by each group's own std."""
    cfg, env, policy = setup
    segs = _segments(env)  # groups of two episodes (segments 0/1, 2/3, 4/5), one segment each
    returns = np.array([s.rewards.sum() for s in segs])
    lengths = np.array([s.length for s in segs])
    centred = returns - np.repeat(returns.reshape(3, 2).mean(1), 2)
    per_sample = torch.tensor(np.repeat(centred, lengths), dtype=torch.float32)
    algo = dataclasses.replace(cfg.algo, advantage="grpo", grpo_std_level="batch")
    adv = Learner(copy.deepcopy(policy), algo, seed=0).prepare(segs).advantages
    torch.testing.assert_close(adv, per_sample / per_sample.std())
    algo = dataclasses.replace(algo, grpo_std_level="group")
    adv = Learner(copy.deepcopy(policy), algo, seed=0).prepare(segs).advantages
    group_std = np.repeat(np.abs(centred.reshape(3, 2)[:, 0]) * np.sqrt(2), 2)  # two values: |d| * sqrt(2)
    torch.testing.assert_close(adv, torch.tensor(np.repeat(centred / group_std, lengths), dtype=torch.float32),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss", ["ppo", "grpo", "fiberpo_domain"])
def test_a_short_mini_batch_weighs_each_sample_one_global_batch_share(setup, loss):
    """A short mini-batch of n samples out of a global batch of B makes the gradient n/B times that of
    the same samples as a full batch; its reported losses stay the mini-batch's means."""
    cfg, env, policy = setup
    segs = _segments(env)
    algo = dataclasses.replace(cfg.algo, loss=loss, max_grad_norm=1e9, micro_batch=3,
                               advantage="grpo" if loss != "ppo" else "gae")
    grads, stats = [], []
    for batch in (None, 40):
        learner = Learner(copy.deepcopy(policy), algo, seed=0)
        samples = learner.prepare(segs)
        n = len(samples)
        stats.append(learner.optimizer_step(samples, np.arange(n), batch))
        grads.append(torch.cat([p.grad.flatten() for p in learner.policy.parameters() if p.grad is not None]))
    assert n < 40
    torch.testing.assert_close(grads[1], grads[0] * n / 40, atol=1e-7, rtol=1e-4)
    for key in ("policy_loss", "value_loss", "entropy"):
        assert stats[1][key] == pytest.approx(stats[0][key], rel=1e-5, abs=1e-7)


def test_norm_reward_scales_gae_rewards_per_env_and_survives_a_checkpoint(setup):
    """algo.norm_reward: GAE sees each reward divided by the running std of the discounted return, the
    running return carried per env across its segments and reset at its episode's end; the statistics are
    part of the learner's checkpoint."""
    from tristream.algos import RunningMeanStd, scale_rewards
    cfg, env, policy = setup
    segs = _segments(env)
    algo = dataclasses.replace(cfg.algo, advantage="gae", norm_adv=False, norm_reward=True)
    learner = Learner(copy.deepcopy(policy), algo, seed=0)
    got = learner.prepare(segs).returns
    plain = Learner(copy.deepcopy(policy), dataclasses.replace(algo, norm_reward=False), seed=0).prepare(segs).returns
    stats, scale = RunningMeanStd(), []
    for s in segs:  # every test segment is its own env's first
        _, _, stats = scale_rewards(s.rewards, 0.0, stats, algo.gamma)
        scale.append(float(np.sqrt(stats.var + 1e-8)))
    assert learner.reward_stats == stats
    assert not torch.allclose(got, plain)
    assert learner._env_returns == {s.env_id: pytest.approx(s.rewards[::-1] @ algo.gamma ** np.arange(s.length))
                                    for s in segs if not s.episode_done} | {s.env_id: 0.0 for s in segs if s.episode_done}
    state = learner.state_dict()
    again = Learner(copy.deepcopy(policy), algo, seed=0)
    again.load_state_dict(state)
    assert again.reward_stats == learner.reward_stats and again._env_returns == learner._env_returns


def test_value_norm_standardises_targets_and_reads_the_critic_in_return_units(setup):
    """algo.value_norm: the critic's outputs are standardised returns. GAE runs on them read back through the
    running statistics (as they stood before each segment), the targets are the returns standardised by
    statistics that include them, segment by segment in order; the statistics are part of the checkpoint."""
    from tristream.algos import RunningMeanStd, destandardize, gae, standardize
    cfg, env, policy = setup
    segs = _segments(env)
    algo = dataclasses.replace(cfg.algo, advantage="gae", norm_adv=False, value_norm=True, gamma=0.9)
    learner = Learner(copy.deepcopy(policy), algo, seed=0)
    learner.value_stats = stats = RunningMeanStd(mean=-3.0, var=4.0, count=10.0)
    got = learner.prepare(segs)
    advs, targets = [], []
    for s in segs:
        with torch.no_grad():
            boot = float(policy.value(ObsBatch.stack([s.bootstrap_obs]).as_dict())[0])
        values = torch.from_numpy(destandardize(s.values, stats))[:, None]
        boot = torch.tensor([float(destandardize(np.array([boot]), stats)[0])])
        T = s.length
        term, trunc = torch.zeros(T, 1, dtype=torch.bool), torch.zeros(T, 1, dtype=torch.bool)
        term[-1], trunc[-1] = s.terminated, s.truncated and not s.terminated
        adv, ret = gae(torch.from_numpy(s.rewards)[:, None], values, term, trunc, boot,
                       truncation_values=boot.expand(T, 1), gamma=0.9, lam=algo.gae_lambda)
        stats = stats.update(ret[:, 0].numpy())
        advs.append(adv[:, 0])
        targets.append(torch.from_numpy(standardize(ret[:, 0].numpy(), stats)))
    assert learner.value_stats == stats
    torch.testing.assert_close(got.advantages, torch.cat(advs), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.returns, torch.cat(targets), rtol=1e-4, atol=1e-5)
    plain = Learner(copy.deepcopy(policy), dataclasses.replace(algo, value_norm=False), seed=0).prepare(segs)
    assert not torch.allclose(got.advantages, plain.advantages)  # the critic is read in other units
    again = Learner(copy.deepcopy(policy), algo, seed=0)
    again.load_state_dict(learner.state_dict())
    assert again.value_stats == learner.value_stats


def test_value_norm_needs_gae(tiny):
    from tristream.config import ConfigError
    with pytest.raises((ConfigError, ValueError), match="algo.value_norm standardises the critic's targets"):
        tiny("algo.advantage=grpo", "algo.loss=grpo", "algo.value_norm=true")


def test_norm_reward_needs_gae(tiny):
    from tristream.config import ConfigError
    with pytest.raises((ConfigError, ValueError), match="algo.norm_reward scales GAE's rewards"):
        tiny("algo.advantage=grpo", "algo.loss=grpo", "algo.norm_reward=true")
