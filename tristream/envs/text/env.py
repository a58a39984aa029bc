"""TextEnv: one verifiable text problem per episode, for language policies (``policy.name=lm``).

An episode is one decision step, the RL-for-LLM bandit: the observation's ``instruction`` is the prompt,
the action is the completion as byte-token ids (float32 [max_new_tokens], what the LM policy emits; PAD
after the first EOS), the reward is the domain's checker (1 exact, 0 otherwise), and the episode
terminates. Images and state are empty. ``info`` carries ``success``, ``task`` (the domain, or
``domain/mode`` with ``modes``: mix.py), ``prompt``, ``completion``, ``answer`` (the teacher's completion)
and ``tokens`` (generated tokens, EOS included: the cost of the answer).

Which split a seed draws from: ``split="auto"`` (the default) uses the held-out split for seeds from
``heldout_seeds_from`` on (10**7, where ``tristream eval`` starts: eval.seed_offset) and the training split
below it, where every training and GRPO seed lies. The splits are disjoint by content (domains.py).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from tristream.envs.base import Env, EnvSpec, Obs
from tristream.envs.text.domains import DOMAINS, TextProblem
from tristream.envs.text.mix import TextMix
from tristream.lm.tokenizer import ByteTokenizer

TOKENIZER = ByteTokenizer()
_EMPTY_IMAGES = np.zeros((0, 0, 0, 3), np.uint8)
_EMPTY_STATE = np.zeros((0,), np.float32)


class TextEnv(Env):
    def __init__(self, *, domains: Sequence[str] = tuple(DOMAINS), weights: Sequence[float] | None = None,
                 difficulty: Mapping[str, int] | int | None = None, heldout_fraction: float = 0.1,
                 max_new_tokens: int | None = None, split: str = "auto", heldout_seeds_from: int = 10_000_000,
                 zero_digit_prob: float = 0.0, modes: Sequence[str] = ("direct",), **_common: Any):
        """``_common``: the keywords every env gets (image_size, max_episode_steps, reward_shaping), which
        do not apply to text."""
        if split not in ("auto", "train", "heldout"):
            raise ValueError(f"text env: split must be auto, train or heldout, got {split!r}")
        self.mix = TextMix(domains, weights, difficulty, heldout_fraction, modes)
        self.max_new_tokens = int(max_new_tokens or self.mix.answer_width + 1)  # the answer and EOS
        if self.max_new_tokens < self.mix.answer_width + 1:
            raise ValueError(f"text env: max_new_tokens={self.max_new_tokens} cannot hold the longest answer and "
                             f"EOS ({self.mix.answer_width + 1} tokens)")
        self.split, self.heldout_seeds_from, self.zero_digit_prob = split, int(heldout_seeds_from), zero_digit_prob
        self.spec = EnvSpec(action_dim=self.max_new_tokens, state_dim=0, camera_names=(), image_size=0,
                            max_episode_steps=1, tasks=tuple(self.mix.tasks),
                            extra={"text": True, "tokenizer": "byte"})
        self.problem: TextProblem | None = None

    def split_of_seed(self, seed: int) -> str:
        if self.split != "auto":
            return self.split
        return "heldout" if seed >= self.heldout_seeds_from else "train"

    def reset(self, seed: int) -> Obs:
        split = self.split_of_seed(seed)
        self.problem = self.mix.sample(seed, split, self.zero_digit_prob if split == "train" else 0.0)
        return self._obs()

    def _obs(self) -> Obs:
        return {"images": _EMPTY_IMAGES, "state": _EMPTY_STATE, "instruction": self.problem.prompt}

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        if self.problem is None:
            raise RuntimeError("TextEnv.step before reset")
        ids = np.rint(np.asarray(action, dtype=np.float64)).astype(np.int64).tolist()
        completion = TOKENIZER.decode(ids)
        reward = self.mix.reward(self.problem.prompt, completion)
        tokens = next((i + 1 for i, t in enumerate(ids) if t == TOKENIZER.EOS), sum(t != TOKENIZER.PAD for t in ids))
        info = {"success": reward == 1.0, "task": self.task, "prompt": self.problem.prompt,
                "completion": completion, "answer": self.problem.answer, "tokens": tokens}
        return self._obs(), reward, True, False, info

    @property
    def task(self) -> str:
        return self.mix.label(self.problem.domain, self.problem.mode) if self.problem is not None else self.mix.tasks[0]
