"""LMPolicy: the MoE language model (tristream.lm) behind the Policy interface, for RL on text envs.

One decision step is one whole completion: ``act`` reads the prompts from ``obs["instruction"]``, samples up
to ``max_new_tokens`` tokens per row on the MLA cache, and returns them as the action chunk [B, 1, L]
(token ids as float32, PAD after the first EOS) with one behaviour log-prob per generated token [B, L]
(0 after EOS). So a "token" of the RL losses is a text token, and :meth:`token_mask` tells the learner which
ones were generated. ``evaluate`` is the teacher-forced forward of prompt + completion that gives the same
log-probs (and per-token entropies) with gradients. No value head: language RL uses GRPO-style advantages.

A completion is generated in one ``act`` call, and the inference worker swaps weights only between
calls, so every token of a completion comes from one policy version: the one the reply is stamped with.

Prompts of different lengths are generated in one pass per length (the cache holds one length per batch);
the text domains write every prompt of a domain at one length, so a batch costs one pass per domain.

How rollouts are generated (:meth:`configure_rollout`, set on the inference worker's copy from
``rollout.speculative_k`` / ``rollout.weights``): MTP self-speculative sampling, exact in distribution;
and generation from a round-to-nearest INT8 / INT4 export of the current weights, rebuilt whenever the
weights change (each publication), while ``evaluate`` (the learner) stays fp32.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

import torch

from tristream.lm.config import LMConfig
from tristream.lm.generate import sample_with_logp, tempered_logp
from tristream.lm.model import LM
from tristream.lm.tokenizer import NEVER_SAMPLED, ByteTokenizer
from tristream.noise import RowNoise
from tristream.policies.base import ActOutput, EvalOutput, Policy

TOKENIZER = ByteTokenizer()


class LMPolicy(Policy):
    chunk_len = 1

    def __init__(self, env_spec, model: LM, *, temperature: float = 1.0, top_p: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"policy.kwargs.temperature must be > 0 (RL needs a sampling distribution), got "
                             f"{temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"policy.kwargs.top_p must be in (0, 1], got {top_p}")
        if model.cfg.vocab_size != TOKENIZER.vocab_size:
            raise ValueError(f"LMPolicy: the model's vocab_size is {model.cfg.vocab_size}; the byte tokenizer needs "
                             f"{TOKENIZER.vocab_size}")
        self.env_spec = env_spec
        self.model = model
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.tokens_per_chunk = int(env_spec.action_dim)  # max new tokens per completion
        self.speculative_k, self.rollout_weights, self.group_size = 0, "fp32", 32
        self._served: tuple[tuple[int, ...], LM] | None = None  # (weights' versions, their low-bit export)
        self._stats: dict[str, float] = defaultdict(float)

    def configure_rollout(self, speculative_k: int = 0, weights: str = "fp32", group_size: int = 32) -> None:
        if speculative_k and self.model.mtp is None:
            raise ValueError(f"rollout.speculative_k={speculative_k} needs an LM with an MTP block "
                             f"(num_nextn_predict_layers=1); this one has none")
        if weights not in ("fp32", "int8", "int4"):
            raise ValueError(f"rollout.weights must be fp32, int8 or int4, got {weights!r}")
        self.speculative_k, self.rollout_weights, self.group_size = int(speculative_k), weights, int(group_size)
        self._served = None

    def apply_qat(self, bits: int, group_size: int) -> None:
        """Compute through fake-quantized Linear weights from now on (QAT; the parameters stay fp32)."""
        from tristream.lm.quant import apply_qat
        apply_qat(self.model, bits, group_size)

    def serving_model(self) -> LM:
        """The model rollouts generate with: this policy's, or the low-bit export of its current weights
        (re-exported when any weight changed in place: a publication's load_state_dict, an optimizer step)."""
        if self.rollout_weights == "fp32":
            return self.model
        versions = tuple(p._version for p in self.model.parameters())
        if self._served is None or self._served[0] != versions:
            import copy

            from tristream.lm.quant import quantize_model, remove_qat
            bits = {"int8": 8, "int4": 4}[self.rollout_weights]
            # kernels=False: rollouts compute in fp32 like the learner; the integer kernels' bf16 activations
            # would add up to ~0.05 of log-prob mismatch (lm_text), more than QAT takes away
            export = quantize_model(remove_qat(copy.deepcopy(self.model)), bits, self.group_size,
                                    kernels=False).eval()
            self._served = (versions, export)
            self._stats["exports"] += 1
        return self._served[1]

    def rollout_stats(self) -> dict[str, float]:
        """Generation counters since the last call: completions, new_tokens (EOS included), main_forwards,
        and for speculative sampling rounds, emitted (tokens over all rounds), drafted, accepted."""
        out, self._stats = dict(self._stats), defaultdict(float)
        return out

    # --- rollouts -----------------------------------------------------------------------------------
    def _prompts(self, obs: dict[str, Any]) -> list[list[int]]:
        return [TOKENIZER.encode(p, bos=True) for p in obs["instruction"]]

    @torch.no_grad()
    def act(self, obs: dict[str, Any], deterministic: bool = False, noise: RowNoise | None = None) -> ActOutput:
        prompts = self._prompts(obs)
        B, L = len(prompts), self.tokens_per_chunk
        tokens = torch.full((B, L), TOKENIZER.PAD, dtype=torch.long)
        logp = torch.zeros(B, L)
        by_len: dict[int, list[int]] = defaultdict(list)
        for i, p in enumerate(prompts):
            by_len[len(p)].append(i)
        was_training = self.model.training
        self.model.eval()
        model = self.serving_model()
        uniforms = noise.uniform(L) if noise is not None and not deterministic else None
        for rows in by_len.values():  # one cached generation per prompt length
            with self.autocast():  # run.precision=bf16 (sampling log-probs are fp32: tempered_logp)
                t, lp, stats = sample_with_logp(model, torch.tensor([prompts[i] for i in rows]), L,
                                                temperature=self.temperature, top_p=self.top_p, greedy=deterministic,
                                                eos_id=TOKENIZER.EOS, pad_id=TOKENIZER.PAD, banned=NEVER_SAMPLED,
                                                draft_k=self.speculative_k,
                                                uniforms=None if uniforms is None else uniforms[rows])
            tokens[rows], logp[rows] = t, lp
            self._stats["main_forwards"] += stats["main_forwards"]
            for key in ("rounds", "drafted", "accepted"):
                self._stats[key] += stats.get(key, 0)
            self._stats["emitted"] += sum(stats.get("accept_lengths", ()))
        self.model.train(was_training)
        self._stats["completions"] += B
        self._stats["new_tokens"] += float((tokens != TOKENIZER.PAD).sum())
        return ActOutput(actions=tokens[:, None, :].float(), logp=logp, value=torch.zeros(B))

    # --- training -----------------------------------------------------------------------------------
    def token_mask(self, actions: torch.Tensor) -> torch.Tensor:
        """[B, L] float: 1 for the generated tokens (up to and including the first EOS), 0 for the padding."""
        tok = actions[:, 0, :].long()
        return (tok != TOKENIZER.PAD).float()

    def evaluate(self, obs: dict[str, Any], actions: torch.Tensor) -> EvalOutput:
        """Teacher-forced log-probs and entropies [B, L] of the completions ``actions`` [B, 1, L] (0 on padding)."""
        prompts = self._prompts(obs)
        comp = actions[:, 0, :].long()  # [B, L]
        B, L = comp.shape
        lengths = torch.tensor([len(p) for p in prompts])
        rows = [p + comp[b].tolist() for b, p in enumerate(prompts)]
        tokens = TOKENIZER.batch(rows)  # right-padded: causal attention never looks at the padding
        with self.autocast():  # run.precision=bf16; the log-probs below are fp32 (tempered_logp)
            logits = self.model(tokens).logits  # [B, T, V]
        # the logits that predict completion token j sit at position len(prompt) - 1 + j
        pos = (lengths[:, None] - 1 + torch.arange(L)[None, :]).clamp(max=tokens.shape[1] - 1)
        logits = logits.gather(1, pos[..., None].expand(B, L, logits.shape[-1]))
        logp_all = tempered_logp(logits, self.temperature, NEVER_SAMPLED)
        mask = self.token_mask(actions)
        # where(), not a product: PAD's log-prob is -inf (never sampled), and -inf * 0 is nan
        logp = torch.where(mask > 0, logp_all.gather(-1, comp[..., None])[..., 0], 0.0)
        entropy = -(logp_all.exp() * logp_all.clamp(min=-1e30)).sum(-1) * mask  # 0 * -inf -> 0
        return EvalOutput(logp=logp, entropy=entropy, value=torch.zeros(B))

    def value(self, obs: dict[str, Any]) -> torch.Tensor:
        return torch.zeros(len(obs["instruction"]))

    def bc_loss(self, obs: dict[str, Any], actions: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per generated token (SFT on completions)."""
        out = self.evaluate(obs, actions)
        return -out.logp.sum() / self.token_mask(actions).sum().clamp(min=1)

    def config_dict(self) -> dict[str, Any]:
        return {"lm_config": self.model.cfg.to_dict(), "temperature": self.temperature, "top_p": self.top_p}


def make_lm_policy(env_spec, *, lm_config: dict | None = None, config: str = "tiny", temperature: float = 1.0,
                   top_p: float = 1.0, head=None, chunk_len=None, hidden_dim=None, init_log_std=None) -> LMPolicy:
    """``policy.name=lm``: a fresh LM of ``lm_config`` (a config.json dict; saved policies carry it) or of the
    preset ``config`` (policy.kwargs.config), with the byte vocabulary. ``head``, ``chunk_len``,
    ``hidden_dim`` and ``init_log_std`` are VLA settings of the policy section; a language policy has none."""
    if lm_config is not None:
        cfg = LMConfig.from_json(lm_config)
    else:
        cfg = dataclasses.replace(LMConfig.preset(config), vocab_size=TOKENIZER.vocab_size)
    if not env_spec.extra.get("text"):
        raise ValueError("policy.name=lm needs a text env (env.name=text or text/<domain>: tristream env list); "
                         f"this env's spec has no text actions (action_dim={env_spec.action_dim})")
    return LMPolicy(env_spec, LM(cfg), temperature=temperature, top_p=top_p)
