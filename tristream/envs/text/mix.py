"""A weighted mix of text domains: what the text env samples from and what SFT of a language policy trains on.

The same sampler serves both, so the SFT data are the RL env's training distribution. Training problems
pick their domain with the mix's weights; held-out problems cycle through the domains in turn, so every
domain gets the same number of evaluation problems.

Modes: with ``modes=("direct", "think")`` every prompt starts with a mode tag, ``/no_think `` (answer
directly) or ``/think `` (write the domain's worked trace, then ``>`` and the answer), and each problem's
mode is drawn uniformly from those its domain has (domains without a trace are always direct). Task labels
are then ``domain/mode`` (``addition/think``), so evaluation reports every domain and mode apart. The
default, ``("direct",)``, adds no tag.
"""
from __future__ import annotations

import random
from typing import Mapping, Sequence

from tristream.envs.text.domains import DOMAINS, SPLITS, TRACE_END, Domain, TextProblem, make_domain

MODE_TAGS = {"direct": "/no_think ", "think": "/think "}


class TextMix:
    def __init__(self, domains: Sequence[str] = tuple(DOMAINS), weights: Sequence[float] | None = None,
                 difficulty: Mapping[str, int] | int | None = None, heldout_fraction: float = 0.1,
                 modes: Sequence[str] = ("direct",)):
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
        modes = [modes] if isinstance(modes, str) else list(modes)
        if not modes or len(set(modes)) != len(modes) or set(modes) - set(MODE_TAGS):
            raise ValueError(f"text env: modes {modes} must be distinct names of {', '.join(MODE_TAGS)}")
        self.tagged = modes != ["direct"]
        self.modes = {n: [m for m in modes if m == "direct" or d.thinks] for n, d in self.domains.items()}
        unable = [n for n, m in self.modes.items() if not m]
        if unable:
            raise ValueError(f"text env: domains {unable} have no thinking form (modes {modes}); domains with one: "
                             f"{', '.join(n for n, d in self.domains.items() if d.thinks) or 'none of these'}; "
                             f"add 'direct' to modes")
        self.answer_width = max(d.trace_width + len(TRACE_END) + d.answer_width if "think" in self.modes[n]
                                else d.answer_width for n, d in self.domains.items())  # the longest completion
        self.tasks = [self.label(n, m) for n in self.names for m in self.modes[n]]

    def label(self, domain: str, mode: str) -> str:
        """The task name of a domain in a mode: the domain, or ``domain/mode`` when prompts carry mode tags."""
        return f"{domain}/{mode}" if self.tagged else domain

    def sample(self, seed: int, split: str, zero_digit_prob: float = 0.0, teacher_error: float = 0.0) -> TextProblem:
        """The problem of ``seed`` in ``split``: a function of the seed alone, on every machine
        (``teacher_error``: see :meth:`Domain.sample`)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        rng = random.Random(f"text:{split}:{seed}")
        if split == "heldout":  # every domain, and every mode of it, in turn
            name = self.names[seed % len(self.names)]
            mode = self.modes[name][(seed // len(self.names)) % len(self.modes[name])]
        else:
            name = rng.choices(self.names, weights=self.weights)[0]
            mode = rng.choice(self.modes[name]) if len(self.modes[name]) > 1 else self.modes[name][0]
        p = self.domains[name].sample(rng, split, zero_digit_prob, teacher_error, mode)
        return TextProblem(MODE_TAGS[mode] + p.prompt, p.answer, p.domain, mode) if self.tagged else p

    def split_mode(self, prompt: str) -> tuple[str, str]:
        """(mode, the prompt without its tag)."""
        for mode, tag in MODE_TAGS.items():
            if self.tagged and prompt.startswith(tag):
                return mode, prompt[len(tag):]
        return "direct", prompt

    def problems(self, split: str, n: int, seed: int, zero_digit_prob: float = 0.0,
                 teacher_error: float = 0.0) -> list[TextProblem]:
        """``n`` problems of ``split`` (the interface of :class:`tristream.lm.tasks.ArithmeticTask`)."""
        return [self.sample(seed * 1_000_003 + i, split, zero_digit_prob, teacher_error) for i in range(n)]

    def domain_of(self, prompt: str) -> Domain:
        """The domain of a prompt (with or without its mode tag)."""
        prompt = self.split_mode(prompt)[1]
        for d in sorted(self.domains.values(), key=lambda d: -len(d.prefix)):  # the empty prefix last
            if prompt.startswith(d.prefix):
                return d
        raise ValueError(f"prompt {prompt!r} belongs to none of the domains {self.names}")

    def reward(self, prompt: str, completion: str) -> float:
        body = self.split_mode(prompt)[1]
        return self.domain_of(body).reward(body, completion)

    def describe(self) -> str:
        w = sum(self.weights)
        modes = f"; modes {', '.join(sorted({m for ms in self.modes.values() for m in ms}))}" if self.tagged else ""
        return ", ".join(f"{d.describe()} x{wt / w:.2f}" for d, wt in zip(self.domains.values(), self.weights)) + modes
