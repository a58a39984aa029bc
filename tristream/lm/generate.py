"""Decoding: plain (one main-model forward per token) and MTP self-speculative, both on MLA's cache.

Self-speculative decoding, one round (n tokens accepted so far, x_n already chosen, main cache holds
positions 0..n-1):
  1. draft: the MTP block first catches up on the positions whose main hidden states are new (their
     entries stay in its cache), then runs recursively, feeding its own output as the next h, to propose
     d_1..d_k (temporary cache entries, rolled back after drafting);
  2. verify: ONE main forward over [x_n, d_1..d_k] (k + 1 positions) gives p_1..p_{k+1};
  3. accept the longest prefix d_1..d_m that the main model agrees with (greedy: d_i == argmax p_i;
     sampling: d_i kept with probability min(1, p_i(d_i) / q_i(d_i))), then one more token from the main
     model: argmax p_{m+1} (greedy), a sample from normalise(max(0, p_{m+1} - q_{m+1})) after a
     rejection, or a sample from p_{k+1} when all k were kept. This is the standard speculative-sampling
     rule, so the output distribution is exactly the main model's;
  4. roll the main cache back to n + m + 1 positions (the rejected drafts' entries are dropped).
Each round emits m + 1 tokens (the "acceptance length") for one main forward.

Batches: prompts of one length (no padding). Each row keeps its own accepted drafts and emits its own
m_b + 1 tokens per round; when rows keep different counts the caches become ragged (cache.py: a slot
mask and per-row positions), so a row is never held back by the others' rejections.
"""
from __future__ import annotations

import torch

from tristream.lm.model import LM
from tristream.noise import sample_categorical


def _pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Greedy (temperature 0) or sampled token per row: logits [B, V] -> [B] long."""
    if temperature <= 0:
        return logits.argmax(-1)
    return torch.multinomial(_probs(logits, temperature), 1, generator=generator)[:, 0]


def _probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / temperature) in fp32 (or wider): [..., V]."""
    return torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, dim=-1)


def _finish(prompt: torch.Tensor, new: torch.Tensor, max_new_tokens: int, eos_id: int | None) -> torch.Tensor:
    """Cut to max_new_tokens, pad each row with eos after its first eos, drop columns after every row
    has ended; returns [B, T0 + n] (prompt included)."""
    new = new[:, :max_new_tokens]
    if eos_id is not None and new.numel():
        is_eos = new == eos_id
        after = is_eos.cumsum(1) > 0
        new = new.masked_fill(after, eos_id)
        ended_at = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, new.shape[1])
        new = new[:, :int(ended_at.max())]
    return torch.cat([prompt, new], dim=1)


def _ended(ended: torch.Tensor, new: torch.Tensor, eos_id: int | None) -> bool:
    """Marks (in place) the rows of ``ended`` [B] whose new tokens [B] or [B, n] contain eos; True when
    every row has ended."""
    if eos_id is None:
        return False
    hit = new == eos_id
    ended |= hit if hit.dim() == 1 else hit.any(1)
    return bool(ended.all())


def generate(model: LM, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
             draft_k: int = 0, eos_id: int | None = None, generator: torch.Generator | None = None):
    """Continue ``prompt`` [B, T0] (long, one length for all rows) by up to ``max_new_tokens`` tokens.

    temperature 0 = greedy; draft_k > 0 = MTP self-speculative decoding with k draft tokens per round.
    Returns (tokens [B, T0 + n] with the prompt, stats): stats has new_tokens, main_forwards,
    mtp_forwards and, for speculative decoding, rounds (verify rounds summed over the rows taking part),
    accept_lengths (tokens each of them emitted), mean_accept_len and accept_rate (accepted / proposed
    draft tokens).
    """
    if draft_k < 0:
        raise ValueError(f"generate: draft_k={draft_k} must be >= 0")
    if draft_k > 0 and model.mtp is None:
        raise ValueError("generate: draft_k > 0 needs an MTP block (num_nextn_predict_layers=1)")
    if prompt.shape[1] + max_new_tokens > model.cfg.max_position_embeddings:
        raise ValueError(f"generate: prompt length {prompt.shape[1]} + max_new_tokens {max_new_tokens} exceeds "
                         f"LMConfig.max_position_embeddings={model.cfg.max_position_embeddings}")
    was_training = model.training
    if was_training:  # eval() walks every module: only when needed (it costs ~5% of a short decode)
        model.eval()
    try:
        with torch.inference_mode():
            if draft_k == 0:
                new, stats = _plain(model, prompt, max_new_tokens, temperature, eos_id, generator)
            else:
                new, stats = _speculative(model, prompt, max_new_tokens, temperature, draft_k, eos_id, generator)
            tokens = _finish(prompt, new, max_new_tokens, eos_id)
    finally:
        if was_training:
            model.train()
    tokens = tokens.clone()  # a normal tensor: inference-mode tensors cannot enter a later autograd forward
    stats["new_tokens"] = tokens.shape[1] - prompt.shape[1]
    return tokens, stats


def _plain(model, prompt, max_new_tokens, temperature, eos_id, generator):
    B, T0 = prompt.shape
    cache = model.new_cache(B, capacity=T0 + max_new_tokens)
    out: list[torch.Tensor] = []
    forwards = 0
    ended = torch.zeros(B, dtype=torch.bool, device=prompt.device)
    if max_new_tokens > 0:
        logits = model(prompt, cache, last_only=True).logits[:, -1]
        forwards = 1
        while True:
            out.append(_pick(logits, temperature, generator))
            if len(out) == max_new_tokens or _ended(ended, out[-1], eos_id):
                break
            logits = model(out[-1][:, None], cache).logits[:, -1]
            forwards += 1
    new = torch.stack(out, 1) if out else prompt.new_zeros(B, 0)
    return new, {"main_forwards": forwards, "mtp_forwards": 0}


def _speculative(model, prompt, max_new_tokens, temperature, draft_k, eos_id, generator, dist=None,
                 keep_logits=False):
    """``dist``: logits [..., V] -> the probabilities [..., V] to sample from (default softmax(logits / T));
    greedy decoding takes its argmax. ``keep_logits``: also return the main model's logits of every emitted
    token [B, n, V] (what scores it).

    Rows keep their own number of drafts each round: after a verify, row b keeps x_n and its m_b accepted
    drafts in the cache (:meth:`MLACache.commit`; rows that differ make the caches ragged) and emits its
    own m_b + 1 tokens. A row stops taking part once it has ``max_new_tokens`` tokens or an eos: it leaves
    the batch and both caches, so later rounds run on the rows still decoding."""
    B, T0 = prompt.shape
    greedy = temperature <= 0
    probs = dist or (lambda logits: _probs(logits, temperature))
    target = probs if dist is not None else (lambda logits: logits)  # greedy decoding takes its argmax

    def pick(logits):
        if greedy:
            return target(logits).argmax(-1)
        return torch.multinomial(probs(logits), 1, generator=generator)[:, 0]

    capacity = T0 + max_new_tokens + draft_k + 1  # grows (doubling) when ragged rows leave rejected slots
    cache = model.new_cache(B, capacity=capacity)
    mtp_cache = model.new_cache(B, capacity=capacity, mtp=True)
    stats = {"main_forwards": 0, "mtp_forwards": 0, "rounds": 0, "accept_lengths": [], "drafted": 0,
             "accepted": 0}
    if max_new_tokens <= 0:
        new = prompt.new_zeros(B, 0)
        return (new, _summarise(stats), None) if keep_logits else (new, _summarise(stats))
    out = model(prompt, cache, last_only=True)
    stats["main_forwards"] += 1
    x = pick(out.logits[:, -1])  # [B] the next token of each row, already decided
    width = max_new_tokens + draft_k + 1  # a row under max_new_tokens emits at most draft_k + 1 more
    tokens = prompt.new_zeros(B, width)
    tokens[:, 0] = x
    kept = out.logits.new_zeros(B, width, out.logits.shape[-1]) if keep_logits else None
    if keep_logits:
        kept[:, 0] = out.logits[:, -1]
    final_count = torch.ones(B, dtype=torch.long, device=prompt.device)  # tokens emitted per row, all rows
    # From here on the state covers the *live* rows only (original ids ``live``): a row that has ended
    # (eos or max_new_tokens) leaves the batch, so the rounds the slowest rows still need run on fewer rows.
    live = torch.arange(B, device=prompt.device)
    count = final_count.clone()
    ended = x == eos_id if eos_id is not None else torch.zeros(B, dtype=torch.bool, device=prompt.device)
    # MTP inputs not yet in its cache: main hidden h_j and token x_{j+1} for the pending positions j;
    # pend_kept [B]: how many of them are real per row (None: all)
    pend_h, pend_tok, pend_kept = out.hidden, torch.cat([prompt[:, 1:], x[:, None]], dim=1), None

    while True:
        active = ~ended & (count < max_new_tokens)
        n_live = int(active.sum())  # one sync per round
        if n_live == 0:
            break
        if n_live < live.shape[0]:  # drop the rows that are done, from the state and both caches
            final_count[live] = count
            keep = active.nonzero()[:, 0]
            live, x, count, ended = live[keep], x[keep], count[keep], ended[keep]
            pend_h, pend_tok = pend_h[keep], pend_tok[keep]
            pend_kept = None if pend_kept is None else pend_kept[keep]
            cache.keep_rows(keep)
            mtp_cache.keep_rows(keep)
        rows = torch.arange(n_live, device=prompt.device)
        k = min(draft_k, max_new_tokens - int(count.min()) - 1)
        drafts, q_probs = [], []
        if k > 0:
            start = mtp_cache.length
            o = model.mtp_forward(pend_h, pend_tok, mtp_cache, last_only=pend_kept is None,
                                  select=None if pend_kept is None else pend_kept - 1)
            if pend_kept is not None:
                mtp_cache.commit(start, pend_kept)  # drop the rows' padding positions
                h = o.hidden[rows, pend_kept - 1][:, None]
            else:
                h = o.hidden[:, -1:]
            committed = mtp_cache.length  # entries from true main hiddens: kept
            stats["mtp_forwards"] += 1
            for i in range(k):
                logits = o.logits[:, -1]
                if greedy:
                    d = target(logits).argmax(-1)
                else:
                    q = probs(logits)
                    d = torch.multinomial(q, 1, generator=generator)[:, 0]
                    q_probs.append(q)
                drafts.append(d)
                if i < k - 1:
                    o = model.mtp_forward(h, d[:, None], mtp_cache)
                    h = o.hidden[:, -1:]
                    stats["mtp_forwards"] += 1
            mtp_cache.truncate(committed)  # drop the recursive drafts' entries

        n = cache.length
        verify = model(torch.stack([x, *drafts], dim=1), cache)  # logits [n_live, k + 1, V]
        stats["main_forwards"] += 1
        m_row, nxt = _accept(target(verify.logits) if greedy else probs(verify.logits), drafts, q_probs, greedy,
                             generator)
        cache.commit(n, m_row + 1)  # each row keeps x_n and its accepted drafts

        d = torch.stack(drafts, dim=1) if k else prompt.new_zeros(n_live, 0)
        emitted = torch.cat([d, nxt[:, None]], dim=1)  # [n_live, k + 1]: d_1..d_m, then the main model's token
        emitted[rows, m_row] = nxt
        steps = torch.arange(k + 1, device=prompt.device)
        write = steps[None] <= m_row[:, None]  # [n_live, k + 1]
        at = (count[:, None] + steps[None]).clamp(max=width - 1)
        r = live[:, None]
        tokens[r, at] = torch.where(write, emitted, tokens[r, at])
        if keep_logits:
            kept[r, at] = torch.where(write[..., None], verify.logits, kept[r, at])
        if eos_id is not None:
            ended = ended | ((emitted == eos_id) & write).any(1)
        stats["rounds"] += n_live
        stats["drafted"] += k * n_live
        accepted = m_row.tolist()
        stats["accepted"] += sum(accepted)
        stats["accept_lengths"] += [m + 1 for m in accepted]
        count = count + m_row + 1
        if k > 0:  # (after a round without drafts every row is done: nothing more to catch up on)
            pend_h, pend_tok, pend_kept = verify.hidden, emitted, m_row + 1
        x = nxt
    final_count[live] = count
    new = tokens[:, :min(int(final_count.max()), max_new_tokens)]
    # a row past its eos (or past max_new_tokens) holds zeros: callers cut at eos / max_new_tokens
    if keep_logits:
        return new, _summarise(stats), kept[:, :new.shape[1]]
    return new, _summarise(stats)


def _accept(target, drafts, q_probs, greedy, generator):
    """Verification: ``target`` [B, k+1, V] of the main model at [x_n, d_1..d_k] (its probabilities; greedy:
    anything whose argmax is the main model's token); drafts k x [B].

    Returns (m_row [B], next token [B]): the accepted drafts per row, and the token each row emits after them.
    """
    k = target.shape[1] - 1
    d = torch.stack(drafts, 1) if k else target.new_zeros(target.shape[0], 0, dtype=torch.long)
    if greedy:
        return accept_greedy(target, d)
    q = torch.stack(q_probs, 1) if k else target.new_zeros(target.shape[0], 0, target.shape[2])
    return accept_sampled(target, q, d, generator)


def accept_greedy(logits: torch.Tensor, d: torch.Tensor):
    """Per row: m_row [B] = length of the prefix of drafts d [B, k] equal to argmax of logits [B, k+1, V],
    and the main model's token after it, argmax p_{m_row + 1} [B]."""
    target = logits.argmax(-1)  # [B, k + 1]
    m_row = (d == target[:, :d.shape[1]]).long().cumprod(1).sum(1)
    return m_row, target.gather(1, m_row[:, None])[:, 0]


def accept_sampled(p: torch.Tensor, q: torch.Tensor, d: torch.Tensor, generator=None):
    """Speculative-sampling acceptance per row (Leviathan et al. 2023; Chen et al. 2023).

    p [B, k+1, V] main-model probabilities at the k+1 verified positions, q [B, k, V] the draft
    probabilities d [B, k] were sampled from. Draft i is kept with probability min(1, p_i(d_i) / q_i(d_i))
    while all before it were kept; m_row [B] counts the kept ones. The next token [B] is sampled from
    normalise(max(0, p - q)) at the first rejected position, or from p_{k+1} if all were kept. Every
    emitted token is then distributed as under p.
    """
    B, k = d.shape
    p_d = p[:, :k].gather(-1, d[..., None])[..., 0]
    q_d = q.gather(-1, d[..., None])[..., 0]
    u = torch.rand(B, k, generator=generator, dtype=p.dtype, device=p.device)
    m_row = (u * q_d < p_d).long().cumprod(1).sum(1)  # u < p/q without dividing by q
    q_pad = torch.cat([q, q.new_zeros(B, 1, q.shape[-1])], dim=1)  # q = 0 after the last draft: residual = p
    rows = torch.arange(B, device=p.device)
    residual = (p[rows, m_row] - q_pad[rows, m_row]).clamp(min=0)
    mass = residual.sum(-1, keepdim=True)
    residual = torch.where(mass > 0, residual / mass.clamp(min=1e-30), p[rows, m_row])
    return m_row, torch.multinomial(residual, 1, generator=generator)[:, 0]


def _summarise(stats: dict) -> dict:
    rounds = max(stats["rounds"], 1)
    stats["mean_accept_len"] = sum(stats["accept_lengths"]) / rounds
    stats["accept_rate"] = stats["accepted"] / stats["drafted"] if stats["drafted"] else 0.0
    return stats


def sample_with_logp(model: LM, prompt: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
                     top_p: float = 1.0, greedy: bool = False, eos_id: int, pad_id: int,
                     banned: tuple[int, ...] = (), draft_k: int = 0, generator: torch.Generator | None = None,
                     uniforms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Sample continuations of ``prompt`` [B, T0] (long, one length) on the MLA cache, for RL rollouts.

    Returns (tokens [B, max_new_tokens] long: the sampled ids, ``pad_id`` after each row's first
    ``eos_id``; logp [B, max_new_tokens] float32: log softmax(logits / temperature) of each sampled token,
    0 after the row's eos; stats: main_forwards and, with ``draft_k``, the speculative statistics of
    :func:`generate`). That is the distribution a teacher-forced forward of the same weights gives,
    so the learner recomputes these log-probs exactly. ``greedy``: the argmax token (log-probs still of
    the tempered distribution). ``top_p`` < 1 samples from the nucleus, but the log-probs stay those of
    the whole tempered distribution (what the learner can recompute; as vLLM reports them). ``banned``:
    token ids never sampled (their logits are -inf in the distribution too, e.g. PAD and BOS).
    ``draft_k`` > 0: MTP self-speculative sampling with k draft tokens per round, with the
    speculative-sampling rule applied to the same (tempered, banned, nucleus) distribution, so the tokens
    follow exactly the distribution plain sampling draws from; log-probs come from the verifying forward.
    ``uniforms`` [B, max_new_tokens] in [0, 1): plain sampling draws row b's token t by inverse CDF from
    ``uniforms[b, t]`` (a row's tokens then do not depend on the other rows); speculative sampling draws
    from ``generator``.
    """
    if temperature <= 0:
        raise ValueError(f"sample_with_logp: temperature must be > 0 (log-probs need a distribution), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"sample_with_logp: top_p must be in (0, 1], got {top_p}")
    if draft_k < 0 or (draft_k and model.mtp is None):
        raise ValueError(f"sample_with_logp: draft_k={draft_k} needs draft_k >= 0 and, when > 0, an MTP block "
                         f"(num_nextn_predict_layers=1)")
    B, T0 = prompt.shape
    if T0 + max_new_tokens > model.cfg.max_position_embeddings:
        raise ValueError(f"sample_with_logp: prompt length {T0} + max_new_tokens {max_new_tokens} exceeds "
                         f"LMConfig.max_position_embeddings={model.cfg.max_position_embeddings}")
    tokens = prompt.new_full((B, max_new_tokens), pad_id)
    logp = torch.zeros(B, max_new_tokens)

    def dist(logits):  # what is sampled from: tempered, banned, nucleus
        probs = tempered_logp(logits, temperature, banned).exp()
        if top_p < 1:
            probs = _nucleus(probs, top_p)
            probs = probs / probs.sum(-1, keepdim=True)
        return probs

    with torch.inference_mode():
        if draft_k:
            new, stats, logits = _speculative(model, prompt, max_new_tokens, 0.0 if greedy else temperature, draft_k,
                                              eos_id, generator, dist=dist, keep_logits=True)
            lp = tempered_logp(logits, temperature, banned).gather(-1, new[..., None])[..., 0]
            is_eos = new == eos_id
            after = (is_eos.cumsum(1) - is_eos.long()) > 0  # past the row's first eos
            n = new.shape[1]
            tokens[:, :n] = new.masked_fill(after, pad_id)
            logp[:, :n] = lp.masked_fill(after, 0.0)
            return tokens.clone(), logp.clone(), stats
        ended = torch.zeros(B, dtype=torch.bool, device=prompt.device)
        cache = model.new_cache(B, capacity=T0 + max_new_tokens)
        logits = model(prompt, cache, last_only=True).logits[:, -1]
        forwards = 1
        for t in range(max_new_tokens):
            lp = tempered_logp(logits, temperature, banned)
            if greedy:
                tok = lp.argmax(-1)
            else:
                probs = dist(logits) if top_p < 1 else lp.exp()
                tok = (torch.multinomial(probs, 1, generator=generator)[:, 0] if uniforms is None
                       else sample_categorical(probs, uniforms[:, t]))
            tokens[:, t] = torch.where(ended, pad_id, tok)
            logp[:, t] = torch.where(ended, 0.0, lp.gather(1, tok[:, None])[:, 0])
            ended |= tok == eos_id
            if t == max_new_tokens - 1 or bool(ended.all()):
                break
            logits = model(tok[:, None], cache).logits[:, -1]
            forwards += 1
    return tokens.clone(), logp.clone(), {"main_forwards": forwards, "mtp_forwards": 0}


def tempered_logp(logits: torch.Tensor, temperature: float, banned: tuple[int, ...] = ()) -> torch.Tensor:
    """log softmax(logits / temperature) in fp32 over [..., V], ``banned`` ids at -inf: the distribution RL
    rollouts sample from and the learner's teacher-forced forward scores (one definition for both)."""
    logits = logits.float()
    if banned:
        logits = logits.index_fill(-1, torch.tensor(banned, device=logits.device), float("-inf"))
    return torch.log_softmax(logits / temperature, dim=-1)


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """probs [B, V] restricted to the smallest set of top tokens whose mass reaches ``top_p`` (unnormalised:
    multinomial normalises)."""
    sorted_p, order = probs.sort(-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p  # the first token always stays
    return torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
