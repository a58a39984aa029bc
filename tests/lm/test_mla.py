"""MLA attention and its compressed KV cache."""
import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tristream.lm.cache import MLACache
from tristream.lm.config import LMConfig
from tristream.lm.mla import MLA, RopeTable
from tristream.lm.model import LM
from tristream.lm.rope import apply_rope, rope_cos_sin

pytestmark = pytest.mark.kernels  # trains or compares float results: `make test` reruns it on other CPU kernels


def _cfg(**kw):
    return dataclasses.replace(LMConfig.preset("tiny"), vocab_size=64, **kw)


def test_rope_is_a_rotation_with_relative_scores():
    cos, sin = rope_cos_sin(torch.arange(12), 8, 10000.0, torch.float64)
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    rq = apply_rope(q.expand(12, 8), cos, sin)
    rk = apply_rope(k.expand(12, 8), cos, sin)
    assert torch.allclose(rq.norm(dim=-1), q.norm().expand(12))
    # q at position i, k at position j: the score depends on i - j only
    assert torch.allclose(rq[5] @ rk[2], rq[9] @ rk[6])
    assert torch.allclose(rq[0], q)


def test_rope_equals_the_rotate_half_formula():
    """apply_rope's folded sign (roll and a signed sin table) gives x cos + rotate_half(x) sin exactly."""
    pos = torch.arange(7)
    cos, signed_sin = rope_cos_sin(pos, 16, 10000.0, torch.float32)
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    freqs = pos.double()[:, None] * inv_freq
    sin = torch.cat([freqs, freqs], -1).sin().float()
    x = torch.randn(3, 7, 16)
    x1, x2 = x.chunk(2, dim=-1)
    expected = x * cos + torch.cat([-x2, x1], dim=-1) * sin
    assert torch.equal(apply_rope(x, cos, signed_sin), expected)


@pytest.mark.parametrize("q_lora_rank", [96, None])
def test_cached_decoding_matches_full_recompute(q_lora_rank):
    torch.manual_seed(0)
    model = LM(_cfg(q_lora_rank=q_lora_rank)).eval()
    tokens = torch.randint(0, 64, (2, 23))
    with torch.no_grad():
        full = model(tokens).logits
        cache = model.new_cache(2, capacity=4)  # small: exercises growth
        parts = [model(tokens[:, a:b], cache=cache).logits for a, b in [(0, 7), (7, 8), (8, 9), (9, 16), (16, 23)]]
    assert cache.length == 23
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-5)


def test_cache_stores_latent_and_rope_key_only():
    cfg = _cfg()
    torch.manual_seed(0)
    model = LM(cfg).eval()
    cache = model.new_cache(3, capacity=16)
    tokens = torch.randint(0, 64, (3, 5))
    with torch.no_grad():
        model(tokens, cache=cache)
        assert len(cache.latent) == cfg.num_hidden_layers
        assert cache.latent[0].shape == (3, 16, cfg.kv_lora_rank)
        assert cache.k_rope[0].shape == (3, 16, cfg.qk_rope_head_dim)
        # layer 0's cached latent is kv_a_layernorm of the first kv_lora_rank outputs of kv_a_proj
        attn = model.layers[0].self_attn
        h = model.layers[0].input_layernorm(model.embed_tokens(tokens))
        want = attn.kv_a_layernorm(attn.kv_a_proj_with_mqa(h)[..., :cfg.kv_lora_rank])
    torch.testing.assert_close(cache.latent[0][:, :5], want)


def test_truncate_rolls_back():
    torch.manual_seed(0)
    model = LM(_cfg()).double().eval()
    a = torch.randint(0, 64, (1, 10))
    b = torch.randint(0, 64, (1, 4))
    with torch.no_grad():
        cache = model.new_cache(1)
        model(a, cache=cache)
        model(torch.randint(0, 64, (1, 6)), cache=cache)  # rejected continuation
        cache.truncate(10)
        got = model(b, cache=cache).logits
        want = model(torch.cat([a, b], 1)).logits[:, 10:]
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="truncate"):
        cache.truncate(99)


def test_ragged_rows_match_each_row_alone():
    """Rows that keep different numbers of a chunk's slots (commit) continue, through the slot mask and
    per-row positions, exactly as each row's own sequence without cache; then a shared rollback
    (truncate) and a second uneven commit, with capacity growth on the way."""
    torch.manual_seed(0)
    model = LM(_cfg()).double().eval()
    prefix = torch.randint(0, 64, (3, 6))
    chunk = torch.randint(0, 64, (3, 4))
    more = torch.randint(0, 64, (3, 3))
    last = torch.randint(0, 64, (3, 2))
    kept, kept2 = torch.tensor([1, 4, 2]), torch.tensor([3, 1, 2])
    with torch.no_grad():
        cache = model.new_cache(3, capacity=8)
        model(prefix, cache=cache)
        model(chunk, cache=cache)
        cache.commit(6, kept)
        assert cache.ragged and cache.lengths.tolist() == [7, 10, 8] and cache.length == 10
        model(torch.randint(0, 64, (3, 2)), cache=cache)  # drafts every row rejects
        cache.truncate(10)
        model(more, cache=cache)
        cache.commit(10, kept2)
        got = model(last, cache=cache).logits
        for b in range(3):
            seq = torch.cat([prefix[b], chunk[b, :kept[b]], more[b, :kept2[b]], last[b]])[None]
            torch.testing.assert_close(got[b], model(seq).logits[0, -2:])
    assert cache.lengths.tolist() == [7 + 3 + 2, 10 + 1 + 2, 8 + 2 + 2]


def test_equal_commits_truncate_without_a_mask():
    torch.manual_seed(0)
    model = LM(_cfg()).eval()
    cache = model.new_cache(2)
    with torch.no_grad():
        model(torch.randint(0, 64, (2, 5)), cache=cache)
        model(torch.randint(0, 64, (2, 3)), cache=cache)
    cache.commit(5, torch.tensor([2, 2]))
    assert not cache.ragged and cache.length == 7 and cache.begin(1) is None and cache.mask is None


def test_mla_module_shapes_and_causality():
    cfg = _cfg()
    torch.manual_seed(0)
    attn = MLA(cfg, layer_idx=0).double()
    x = torch.randn(2, 9, cfg.hidden_size, dtype=torch.float64)
    cos, sin = RopeTable(cfg)(0, 9, x.device, x.dtype)
    c2, s2 = RopeTable(cfg)(3, 6, x.device, x.dtype)  # slices of one table
    torch.testing.assert_close(c2, cos[3:])
    torch.testing.assert_close(s2, sin[3:])
    y = attn(x, cos, sin)
    assert y.shape == x.shape
    x2 = x.clone()
    x2[:, 6:] += 1.0  # changing later tokens leaves earlier outputs unchanged
    torch.testing.assert_close(attn(x2, cos, sin)[:, :6], y[:, :6])
    cache = MLACache(1, 2, cfg.kv_lora_rank, cfg.qk_rope_head_dim, dtype=torch.float64)
    y1 = attn(x[:, :4], cos[:4], sin[:4], cache)
    cache.advance(4)
    y2 = attn(x[:, 4:], cos[4:], sin[4:], cache)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y)


@settings(max_examples=15, deadline=None)
@given(chunks=st.lists(st.integers(1, 5), min_size=1, max_size=5), rollback=st.integers(0, 4))
def test_any_chunking_and_rollback_matches_full(chunks, rollback):
    """Property: feeding a sequence through the cache in any chunks, with a rejected continuation rolled
    back in the middle, gives the logits of one full forward."""
    cfg = _cfg(hidden_size=32, num_attention_heads=2, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8,
               qk_rope_head_dim=8, v_head_dim=8, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2)
    torch.manual_seed(0)
    model = LM(cfg).double().eval()
    tokens = torch.randint(0, 64, (1, sum(chunks)))
    with torch.no_grad():
        full = model(tokens).logits
        cache = model.new_cache(1, capacity=2)
        parts, start = [], 0
        for i, n in enumerate(chunks):
            if i == 1 and rollback:
                model(torch.randint(0, 64, (1, rollback)), cache=cache)
                cache.truncate(start)
            parts.append(model(tokens[:, start:start + n], cache=cache).logits)
            start += n
    torch.testing.assert_close(torch.cat(parts, 1), full)
