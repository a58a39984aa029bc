"""Plain and MTP self-speculative decoding: exact greedy equality and distribution-preserving sampling."""
import dataclasses
import itertools
import math

import pytest
import torch

from tristream.lm.config import LMConfig
from tristream.lm.generate import accept_sampled, generate, sample_with_logp
from tristream.lm.model import LM

pytestmark = pytest.mark.kernels  # trains or compares float results: `make test` reruns it on other CPU kernels

V = 12


def _small_cfg(**kw):
    base = {"vocab_size": V, "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
            "num_hidden_layers": 2, "kv_lora_rank": 32, "q_lora_rank": 48, "qk_nope_head_dim": 16,
            "qk_rope_head_dim": 8, "v_head_dim": 16, "num_attention_heads": 2}
    return dataclasses.replace(LMConfig.preset("tiny"), **{**base, **kw})


def _stride_data(g, B, T):
    """Deterministic sequences counting up by 1 or 2 (mod V), the stride drawn per row: a pattern the
    small model learns in a few dozen steps, and one that needs context (the stride is seen only from
    two tokens)."""
    stride = torch.randint(1, 3, (B, 1), generator=g)
    return (torch.randint(0, V, (B, 1), generator=g) + stride * torch.arange(T)) % V


@pytest.fixture(scope="module")
def trained():
    """A small MoE LM trained with the MTP loss on ``_stride_data`` until, on a held-out batch, its main
    model predicts >= 95% of the tokens (the ceiling is 18.5 / 19: the first step cannot know the stride)
    and its MTP block >= 98%. So a correct drafter's d_1 is accepted almost always, while the recursive
    drafts d_2.. (the MTP block's output standing in for h, never trained that way) are sometimes rejected.

    Training to a criterion, not for a fixed number of steps: how fast it converges depends on the CPU's
    kernels (AVX-512 and AVX2 give other rounding, and at lr 1e-2 the accuracy dips and recovers at other
    steps), and the tests below are about decoding, not about convergence speed. It takes 10-30 steps
    here; 300 without reaching the criterion is a real failure of the model or its loss. float64 for
    decoding so that greedy argmaxes of the chunked verify forward and the one-token forwards cannot differ
    by rounding."""
    torch.manual_seed(0)
    model = LM(_small_cfg()).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    held_out = _stride_data(torch.Generator().manual_seed(123), 64, 20)
    for step in range(1, 301):
        loss, _ = model.loss(_stride_data(g, 16, 20), torch.ones(16, 20), mtp_weight=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_router_bias()
        if step % 5 == 0:
            with torch.no_grad():
                _, held = model.eval().loss(held_out, torch.ones(64, 20), mtp_weight=1.0)
            model.train()
            if held["acc"] >= 0.95 and held["mtp_acc"] >= 0.98:
                return model.double().eval()
    raise AssertionError(f"300 steps did not reach the accuracy criterion on held-out data: {held}")


def _random_model():
    torch.manual_seed(1)
    return LM(dataclasses.replace(LMConfig.preset("tiny"), vocab_size=V)).double().eval()


def _generate_recording_verifies(model, prompt, n, k, **kw):
    """generate(model, prompt, n, draft_k=k) that also returns every verify forward as (the batch rows
    it ran on [b] (rows that are done leave the batch), each row's position before it [b], its tokens
    [b, k + 1] = [x_n, d_1..d_k])."""
    verifies = []
    forward = model.forward

    def recording(tokens, cache=None, **kw):
        if cache is not None and cache.length > 0:  # every main forward after the prefill is a verify
            at = cache.lengths.clone() if cache.ragged else torch.full((tokens.shape[0],), cache.length)
            rows = torch.arange(tokens.shape[0]) if cache.rows is None else cache.rows.clone()
            verifies.append((rows, at, tokens.clone()))
        return forward(tokens, cache, **kw)

    model.forward = recording
    try:
        out, stats = generate(model, prompt, n, draft_k=k, **kw)
    finally:
        del model.forward
    return out, stats, verifies


def _assert_first_drafts_are_uncached_mtp(model, out, verifies):
    """Each round's d_1 must be argmax of the MTP block run WITHOUT cache over the accepted prefix: at
    position n - 1 it sees h_{n-1} and x_n and predicts x_{n+1}. Catches a drafter fed the wrong
    (h, token) pairs or left with stale cache entries, which greedy exactness alone cannot."""
    with torch.no_grad():
        h = model(out).hidden
        want = model.mtp_forward(h[:, :-1], out[:, 1:]).logits.argmax(-1)  # [B, T - 1]: j -> token j + 2
    checked = 0
    for rows, n, tokens in verifies:
        assert (n - 1 < want.shape[1]).all()  # only rows still decoding are verified
        if tokens.shape[1] > 1:  # k = 0 rounds (at the end) draft nothing
            assert torch.equal(tokens[:, 1], want[rows, n - 1]), (rows, n, tokens)
            checked += 1
    assert checked > 0


def test_greedy_speculative_equals_plain_batch1(trained):
    g = torch.Generator().manual_seed(5)
    first_kept = {"trained": [], "random": []}  # per drafting round: was d_1 accepted?
    rejected = 0
    for name, model in (("trained", trained), ("random", _random_model())):
        for k in (1, 2, 3, 4):
            for _ in range(2):
                prompt = _stride_data(g, 1, 6)
                plain, ps = generate(model, prompt, 16)
                spec, ss, verifies = _generate_recording_verifies(model, prompt, 16, k)
                assert torch.equal(spec, plain), (k, prompt)
                assert ss["new_tokens"] == ps["new_tokens"] == 16
                assert ss["main_forwards"] == ss["rounds"] + 1 == len(verifies) + 1
                assert sum(ss["accept_lengths"]) == 16 - 1  # the prefill emits the first token
                _assert_first_drafts_are_uncached_mtp(model, spec, verifies)
                first_kept[name] += [n > 1 for n, (_, _, v) in zip(ss["accept_lengths"], verifies) if v.shape[1] > 1]
                rejected += ss["drafted"] - ss["accepted"]
    # the trained model's MTP predicts the pattern: a correct drafter's d_1 is nearly always kept (a
    # drafter fed misaligned inputs or stale cache entries is not); on the random model drafts are mostly
    # rejected, so the rollback path runs too
    rate = {name: sum(v) / len(v) for name, v in first_kept.items()}
    assert rate["trained"] >= 0.8 and rate["random"] < 0.5 and rejected > 10, (rate, rejected)


@pytest.mark.parametrize("batch", [2, 5, 16])
def test_greedy_speculative_equals_plain_batched(trained, batch):
    prompt = _stride_data(torch.Generator().manual_seed(7), batch, 6)
    plain, _ = generate(trained, prompt, 16)
    for k in (1, 2, 3, 4):
        spec, _, verifies = _generate_recording_verifies(trained, prompt, 16, k)
        assert torch.equal(spec, plain)
        _assert_first_drafts_are_uncached_mtp(trained, spec, verifies)


def test_eos_and_lengths(trained):
    prompt = _stride_data(torch.Generator().manual_seed(3), 2, 6)
    plain, _ = generate(trained, prompt, 16)
    eos = int(plain[0, 8])  # a token the first row emits
    a, _ = generate(trained, prompt, 16, eos_id=eos)
    b, _, verifies = _generate_recording_verifies(trained, prompt, 16, 3, eos_id=eos)
    assert torch.equal(a, b)
    # row 1's first token (from the prefill) is eos: it leaves the batch, every verify runs on row 0 alone
    assert int(a[1, 6]) == eos and all(rows.tolist() == [0] for rows, _, _ in verifies), verifies
    first = int((a[0, 6:] == eos).nonzero()[0])
    assert (a[0, 6 + first:] == eos).all()
    assert a.shape[1] <= plain.shape[1]
    assert not a.is_inference()  # usable as input of a training forward (e.g. RL log-probs)
    trained.loss(a, torch.ones_like(a))
    out, s = generate(trained, prompt, 0, draft_k=2)
    assert torch.equal(out, prompt) and s["new_tokens"] == 0
    assert generate(trained, prompt, 1, draft_k=3)[0].shape == (2, 7)
    with pytest.raises(ValueError, match="draft_k"):
        generate(LM(dataclasses.replace(_small_cfg(), num_nextn_predict_layers=0)), prompt, 4, draft_k=2)


def _chi2_threshold(df: int, z: float = 3.09) -> float:
    """Upper 0.1% quantile of chi-square(df) (Wilson-Hilferty approximation)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def _chi2(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson chi-square of counts [C] against probs [C], pooling cells with expected count < 5."""
    n = counts.sum()
    expected = probs * n
    small = expected < 5
    obs = torch.cat([counts[~small], counts[small].sum()[None]])
    exp = torch.cat([expected[~small], expected[small].sum()[None]])
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    return float(((obs - exp) ** 2 / exp).sum()), int(keep.sum()) - 1


def test_acceptance_rule_preserves_p():
    """The rule alone, vectorised over many rows, with position-indexed, context-free p_i and q_i:
    - the first emitted token is distributed as p_1 (raw drafts would not be: the test has power);
    - the token emitted after all k drafts were kept is distributed as p_{k+1};
    - the first two tokens are jointly p_1 x p_2: rows that rejected d_1 draw their second token in a
      second round (a fresh rule call on positions 2..k+1), as generate does."""
    g = torch.Generator().manual_seed(0)
    N, k, Vs = 200_000, 3, 6
    p = torch.softmax(2 * torch.randn(k + 1, Vs, generator=g, dtype=torch.float64), -1)
    # q near p so that rounds keeping several (and all k) drafts are common
    q = torch.softmax(p[:k].log() + torch.randn(k, Vs, generator=g, dtype=torch.float64), -1)

    def rule(p, q, n):
        d = torch.stack([torch.multinomial(q[i], n, replacement=True, generator=g) for i in range(len(q))], 1)
        m_row, nxt = accept_sampled(p.expand(n, -1, -1), q.expand(n, -1, -1), d, generator=g)
        return d, m_row, nxt

    d, m_row, nxt = rule(p, q, N)
    first = torch.where(m_row > 0, d[:, 0], nxt)
    limit = _chi2_threshold(Vs - 1)
    assert _chi2(torch.bincount(first, minlength=Vs).double(), p[0])[0] < limit
    assert _chi2(torch.bincount(d[:, 0], minlength=Vs).double(), p[0])[0] > 100 * limit  # test has power
    all_kept = m_row == k
    assert (m_row >= 2).float().mean() > 0.2 and all_kept.float().mean() > 0.1
    assert _chi2(torch.bincount(nxt[all_kept], minlength=Vs).double(), p[k])[0] < limit
    second = torch.where(m_row > 1, d[:, 1], nxt)  # rows that kept d_1 emit their second token here
    d2, m2, nxt2 = rule(p[1:], q[1:], N)  # the next round, for rows that rejected d_1
    second = torch.where(m_row > 0, second, torch.where(m2 > 0, d2[:, 0], nxt2))
    joint = torch.bincount(first * Vs + second, minlength=Vs * Vs).double()
    stat, df = _chi2(joint, torch.outer(p[0], p[1]).flatten())
    assert stat < _chi2_threshold(df), (stat, df)


def _sampling_model():
    """1-layer model over 4 tokens with a sharpened head: p and the MTP's q differ visibly."""
    cfg = dataclasses.replace(LMConfig.preset("tiny_dense"), vocab_size=4, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=1, first_k_dense_replace=1, num_attention_heads=2,
                              kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8)
    torch.manual_seed(0)
    model = LM(cfg).double().eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8)
    return model


def _exact_three_token_probs(model, prompt, temperature):
    """P(x_1, x_2, x_3 | prompt) under the main model, for all 64 sequences (enumerated)."""
    seqs = torch.tensor(list(itertools.product(range(4), repeat=3)))
    tokens = torch.cat([prompt.expand(len(seqs), -1), seqs], 1)
    with torch.no_grad():
        logp = torch.log_softmax(model(tokens).logits / temperature, -1)
    T0 = prompt.shape[1]
    steps = logp[:, T0 - 1:T0 + 2].gather(-1, seqs[..., None])[..., 0]
    return seqs, steps.sum(1).exp()


@pytest.mark.parametrize("temperature,batch1_runs", [(1.0, 300), (0.7, 0)])
def test_sampled_speculative_matches_main_distribution(temperature, batch1_runs):
    """Speculative sampling (k = 2, batched, and batch 1 with k = 2 and k = 1 at temperature 1) vs the exact
    distribution of the main model over the next 3 tokens, chi-square at the 0.1% level; plain sampling is
    checked the same way. The batched run keeps drafts per row (ragged caches); the batch-1 k = 1 runs
    sample the token after a kept draft from p_{k+1}."""
    model = _sampling_model()
    prompt = torch.tensor([[1, 3, 0, 2]])
    seqs, probs = _exact_three_token_probs(model, prompt, temperature)
    with torch.no_grad():  # the drafts differ from the main model's choices: the rule matters
        out = model(prompt)
        p1 = torch.softmax(out.logits[0, -1] / temperature, -1)
        x1 = int(p1.argmax())
        q2 = torch.softmax(model.mtp_forward(out.hidden[:, -1:], torch.tensor([[x1]])).logits[0, -1] / temperature, -1)
        p2 = torch.softmax(model(torch.cat([prompt, torch.tensor([[x1]])], 1)).logits[0, -1] / temperature, -1)
    assert 0.5 * (p2 - q2).abs().sum() > 0.2
    def code(t):  # 3 tokens -> one of 64 outcomes
        return t[:, 0] * 16 + t[:, 1] * 4 + t[:, 2]
    assert torch.equal(code(seqs), torch.arange(64))
    g = torch.Generator().manual_seed(0)
    batched, batched_stats = generate(model, prompt.expand(4000, -1), 4, temperature=temperature, draft_k=2,
                                      generator=g)
    assert batched_stats["accepted"] > 2000  # rows keep their own drafts (a shared minimum would keep ~none)
    runs = {
        "plain": generate(model, prompt.expand(4000, -1), 3, temperature=temperature, generator=g)[0][:, 4:],
        "spec batched": batched[:, 4:7],
    }
    if batch1_runs:
        runs["spec batch 1"] = torch.cat([
            generate(model, prompt, 4, temperature=temperature, draft_k=2, generator=g)[0][:, 4:7]
            for _ in range(batch1_runs)])
        # k = 1: when round 1 keeps d_1, the window's third token is the one sampled from p_{k+1}
        outs = [generate(model, prompt, 3, temperature=temperature, draft_k=1, generator=g)
                for _ in range(batch1_runs)]
        runs["spec batch 1, k=1"] = torch.cat([tokens[:, 4:7] for tokens, _ in outs])
        assert sum(stats["accept_lengths"][0] == 2 for _, stats in outs) > batch1_runs // 5
    for name, samples in runs.items():
        counts = torch.bincount(code(samples), minlength=64).double()
        stat, df = _chi2(counts, probs)
        assert stat < _chi2_threshold(df), (name, stat, df)


def test_speculative_rollout_sampling_follows_plain_sampling_with_exact_logprobs():
    """sample_with_logp with MTP drafts (RL rollouts): the next 3 tokens match the main model's exact
    distribution (chi-square, 0.1%), as plain sampling's do; the behaviour log-probs are the tempered main
    model's; greedy rollouts equal plain greedy ones. (eos / pad outside the 4-token vocabulary: no early end.)"""
    model = _sampling_model()
    prompt = torch.tensor([[1, 3, 0, 2]])
    temperature = 0.8
    seqs, probs = _exact_three_token_probs(model, prompt, temperature)
    kw = dict(temperature=temperature, eos_id=98, pad_id=99)
    g = torch.Generator().manual_seed(1)
    batched, logp, stats = sample_with_logp(model, prompt.expand(3000, -1), 3, draft_k=2, generator=g, **kw)
    assert stats["rounds"] > 0
    single = [sample_with_logp(model, prompt, 3, draft_k=2, generator=g, **kw) for _ in range(300)]
    assert sum(s["accept_lengths"][0] > 1 for _, _, s in single) > 30  # drafts were kept, not only rejected
    for name, samples in {"batched": batched, "batch 1": torch.cat([t for t, _, _ in single])}.items():
        code = samples[:, 0] * 16 + samples[:, 1] * 4 + samples[:, 2]
        stat, df = _chi2(torch.bincount(code, minlength=64).double(), probs)
        assert stat < _chi2_threshold(df), (name, stat, df)
    with torch.no_grad():  # behaviour log-probs = teacher-forced log softmax(logits / T) of the same tokens
        logits = model(torch.cat([prompt.expand(len(batched), -1), batched], 1)).logits[:, 3:6]
        expect = torch.log_softmax(logits / temperature, -1).gather(-1, batched[..., None])[..., 0]
    assert torch.allclose(logp.double(), expect, atol=1e-5)
    greedy = dict(kw, greedy=True)
    plain = sample_with_logp(model, prompt.expand(4, -1), 3, **greedy)
    spec = sample_with_logp(model, prompt.expand(4, -1), 3, draft_k=3, **greedy)
    assert torch.equal(plain[0], spec[0]) and torch.allclose(plain[1], spec[1], atol=1e-6)
    with pytest.raises(ValueError, match="MTP block"):
        sample_with_logp(_no_mtp(model), prompt, 3, draft_k=1, **kw)


def _no_mtp(model):
    import copy
    m = copy.deepcopy(model)
    m.mtp = None
    return m
