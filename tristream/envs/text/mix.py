"""A weighted mix of text domains: what the text env samples from and what SFT of a language policy trains on.

The same sampler serves both, so the SFT data are the RL env's training distribution. Training problems
pick their domain with the mix's weights; held-out problems cycle through the domains in turn, so every
domain gets the same number of evaluation problems.
"""
from __future__ import annotations

import random
from typing import Mapping, Sequence

from tristream.envs.text.domains import DOMAINS, SPLITS, Domain, TextProblem, make_domain


class TextMix:
    def __init__(self, domains: Sequence[str] = tuple(DOMAINS), weights: Sequence[float] | None = None,
                 difficulty: Mapping[str, int] | int | None = None, heldout_fraction: float = 0.1):
        if isinstance(domains, str):
            domains = [domains]
        if not domains:
            raise ValueError(f"text env: domains is empty; valid domains: {', '.join(DOMAINS)}")
        if len(set(domains)) != len(domains):
            raise ValueError(f"text env: domains {list(domains)} repeat a name")
        difficulty = difficulty if difficulty is not None else {}
        if not isinstance(difficulty, Mapping):
            difficulty = {d: int(difficulty) for d in domains}
        unknown = sorted(set(difficulty) - set(domains))
        if unknown:
            raise ValueError(f"text env: difficulty names {unknown}, which are not in domains {list(domains)}")
        self.domains: dict[str, Domain] = {d: make_domain(d, difficulty.get(d), heldout_fraction) for d in domains}
        weights = [1.0] * len(domains) if weights is None else [float(w) for w in weights]
        if len(weights) != len(domains) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"text env: weights {weights} must be {len(domains)} non-negative numbers (one per "
                             f"domain of {list(domains)}) with a positive sum")
        self.weights = weights
        self.names = list(domains)
        self.answer_width = max(d.answer_width for d in self.domains.values())

    def sample(self, seed: int, split: str, zero_digit_prob: float = 0.0, teacher_error: float = 0.0) -> TextProblem:
        """The problem of ``seed`` in ``split``: a function of the seed alone, on every machine
        (``teacher_error``: see :meth:`Domain.sample`)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        rng = random.Random(f"text:{split}:{seed}")
        if split == "heldout":
            name = self.names[seed % len(self.names)]
        else:
            name = rng.choices(self.names, weights=self.weights)[0]
        return self.domains[name].sample(rng, split, zero_digit_prob, teacher_error)

    def problems(self, split: str, n: int, seed: int, zero_digit_prob: float = 0.0,
                 teacher_error: float = 0.0) -> list[TextProblem]:
        """``n`` problems of ``split`` (the interface of :class:`tristream.lm.tasks.ArithmeticTask`)."""
        return [self.sample(seed * 1_000_003 + i, split, zero_digit_prob, teacher_error) for i in range(n)]

    def domain_of(self, prompt: str) -> Domain:
        for d in sorted(self.domains.values(), key=lambda d: -len(d.prefix)):  # the empty prefix last
            if prompt.startswith(d.prefix):
                return d
        raise ValueError(f"prompt {prompt!r} belongs to none of the domains {self.names}")

    def reward(self, prompt: str, completion: str) -> float:
        return self.domain_of(prompt).reward(prompt, completion)

    def describe(self) -> str:
        w = sum(self.weights)
        return ", ".join(f"{d.describe()} x{wt / w:.2f}" for d, wt in zip(self.domains.values(), self.weights))
