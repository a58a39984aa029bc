"""The language model as a Policy: behaviour log-probs are the learner's teacher-forced ones, the token mask,
and what happens to a generation when new weights arrive."""
import numpy as np
import pytest
import torch

from tristream.envs import make_env
from tristream.policies import make_policy
from tristream.policies.lm import TOKENIZER
from tristream.runtime.channels import SerialChannel
from tristream.runtime.inference import InferenceWorker
from tristream.runtime.messages import ObsRequest, Weights
from tristream.types import ObsBatch

pytestmark = pytest.mark.kernels


def _batch(env, n, seed0=0):
    return ObsBatch.stack([env.reset(seed=seed0 + i) for i in range(n)])


@pytest.fixture(scope="module")
def env():
    return make_env("text")


def test_behaviour_logp_equals_the_teacher_forced_forward(env):
    """fp32, 1e-5: what inference samples with is what the learner recomputes (prompts of four lengths)."""
    torch.manual_seed(0)
    policy = make_policy("lm", env.spec)
    obs = _batch(env, 32).as_dict()
    assert len({len(p) for p in obs["instruction"]}) > 1
    out = policy.act(obs)
    policy.train()  # the learner's mode
    ev = policy.evaluate(obs, out.actions)
    assert torch.allclose(ev.logp, out.logp, atol=1e-5, rtol=0)
    assert torch.isfinite(ev.entropy).all() and (ev.entropy[policy.token_mask(out.actions) == 0] == 0).all()


def test_completions_end_in_padding_and_never_sample_specials(env):
    torch.manual_seed(1)
    policy = make_policy("lm", env.spec)
    with torch.no_grad():
        policy.model.lm_head.weight.zero_()  # uniform over every token: EOS, PAD and BOS come up if allowed
    out = policy.act(_batch(env, 256).as_dict())
    tok = out.actions[:, 0].long()
    assert out.actions.shape == (256, 1, env.spec.action_dim)
    assert not ((tok == TOKENIZER.BOS).any())
    mask = policy.token_mask(out.actions)
    for row, m, lp in zip(tok, mask, out.logp):
        n = int(m.sum())
        assert (m[:n] == 1).all() and (row[n:] == TOKENIZER.PAD).all() and (lp[n:] == 0).all()
        assert n == len(row) or row[n - 1] == TOKENIZER.EOS  # ends at EOS or at max_new_tokens
    assert (mask.sum(1) < env.spec.action_dim).any()  # some rows stopped early


def test_row_noise_makes_a_completion_independent_of_its_batch(env):
    """With per-row noise (what the inference worker passes) a prompt's completion and its log-probs are the
    same whether it is generated alone or among other prompts of other lengths; the log-probs still equal the
    teacher-forced ones, and specials are still never sampled."""
    from tristream.noise import RowNoise
    torch.manual_seed(3)
    policy = make_policy("lm", env.spec)
    obs = _batch(env, 16).as_dict()
    assert len({len(p) for p in obs["instruction"]}) > 1
    out = policy.act(obs, noise=RowNoise(range(100, 116)))
    for i in (0, 7, 15):
        alone = policy.act({k: v[i:i + 1] for k, v in obs.items()}, noise=RowNoise([100 + i]))
        assert torch.equal(alone.actions, out.actions[i:i + 1])
        assert torch.allclose(alone.logp, out.logp[i:i + 1], atol=1e-5, rtol=0)
    ev = policy.evaluate(obs, out.actions)
    assert torch.allclose(ev.logp, out.logp, atol=1e-5, rtol=0)
    assert not (out.actions[:, 0].long() == TOKENIZER.BOS).any()
    assert len({tuple(r.tolist()) for r in out.actions[:, 0].long()}) > 8  # different keys, different samples


def test_greedy_is_deterministic_and_temperature_is_in_the_logprobs(env):
    torch.manual_seed(2)
    policy = make_policy("lm", env.spec)
    obs = _batch(env, 8).as_dict()
    a, b = policy.act(obs, deterministic=True), policy.act(obs, deterministic=True)
    assert torch.equal(a.actions, b.actions)
    policy.temperature = 2.0
    hot = policy.evaluate(obs, a.actions).logp
    policy.temperature = 1.0
    assert not torch.allclose(hot, policy.evaluate(obs, a.actions).logp)


def test_bad_settings_fail_clearly(env):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        make_policy("lm", env.spec, temperature=0.0)
    with pytest.raises(ValueError, match="needs a text env"):
        make_policy("lm", make_env("toy").spec)


def _worker(policy):
    env_inbox, inbox = SerialChannel(), SerialChannel()
    return InferenceWorker(policy, inbox, {0: env_inbox}, num_groups=1, batch_max=1, seed=5), inbox, env_inbox


def test_a_generation_finishes_with_the_weights_it_started_with(env):
    """The documented rule: a completion is generated in one forward call; weights that arrive meanwhile
    wait in the inbox and apply from the next batch. Each reply carries the version that generated all
    of its tokens, and its log-probs are that version's."""
    torch.manual_seed(3)
    policy = make_policy("lm", env.spec)
    w0 = {k: v.clone() for k, v in policy.state_dict().items()}
    w1 = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in w0.items()}
    worker, inbox, env_inbox = _worker(policy)
    obs = _batch(env, 4)
    inbox.put(Weights(0, w0))
    inbox.put(ObsRequest(0, 0, 0, [0, 1, 2, 3], obs, 0, 0.0, 1))
    worker.poll(timeout=0)
    inbox.put(Weights(1, w1))  # arrives after the first generation started: it does not touch it
    inbox.put(ObsRequest(0, 0, 0, [0, 1, 2, 3], obs, 0, 0.0, 2))
    worker.poll(timeout=0)
    first, second = env_inbox.get(), env_inbox.get()
    assert (first.version, second.version) == (0, 1)
    check = make_policy("lm", env.spec)
    for reply, weights in ((first, w0), (second, w1)):
        check.load_state_dict(weights)
        logp = check.evaluate(obs.as_dict(), torch.from_numpy(reply.actions)).logp
        assert np.allclose(logp.detach().numpy(), reply.logp, atol=1e-5)


def test_low_bit_rollouts_serve_a_fresh_export_of_the_current_weights(env):
    from tristream.lm.quant import QuantizedLinear
    torch.manual_seed(0)
    policy = make_policy("lm", env.spec)
    policy.configure_rollout(weights="int4", group_size=32)
    served = policy.serving_model()
    assert served is not policy.model and policy.serving_model() is served  # exported once per weights
    assert any(isinstance(m, QuantizedLinear) for m in served.modules())
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in policy.state_dict().items()}
    policy.load_state_dict(state)  # a publication
    assert policy.serving_model() is not served
    obs = _batch(env, 16).as_dict()
    out = policy.act(obs)
    diff = (policy.evaluate(obs, out.actions).logp - out.logp).abs()[policy.token_mask(out.actions) > 0]
    assert 1e-4 < diff.max() and diff.mean() < 0.5  # the learner's fp32 log-probs differ from the INT4 rollout's
    stats = policy.rollout_stats()
    assert stats["completions"] == 16 and stats["exports"] == 2 and stats["new_tokens"] > 0
    assert policy.rollout_stats() == {}  # counters since the last call


def test_speculative_rollouts_keep_exact_behaviour_logprobs(env):
    torch.manual_seed(0)
    policy = make_policy("lm", env.spec)
    policy.configure_rollout(speculative_k=2)
    obs = _batch(env, 16).as_dict()
    out = policy.act(obs)
    assert torch.allclose(policy.evaluate(obs, out.actions).logp, out.logp, atol=1e-5, rtol=0)
    stats = policy.rollout_stats()
    assert stats["rounds"] > 0 and stats["emitted"] >= stats["rounds"] and stats["drafted"] > 0


def test_rollout_settings_are_for_language_policies_only(env):
    from tristream.config import Config, ConfigError, load_config
    with pytest.raises(ValueError, match="language policies"):
        make_policy("vla", make_env("tabletop").spec).configure_rollout(speculative_k=2)
    with pytest.raises((ValueError, ConfigError), match="only a language policy"):
        load_config(Config, "default", ["rollout.weights=int4"])
    with pytest.raises((ValueError, ConfigError), match="already weights each token"):
        load_config(Config, "default", ["algo.rollout_is_cap=2"])
    with pytest.raises((ValueError, ConfigError), match="ratio_reference=behaviour never recomputes"):
        load_config(Config, "lm_text", ["rollout.weights=int4", "algo.ratio_reference=behaviour"])
