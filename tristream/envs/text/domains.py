"""Verifiable text domains: problems generated in code, each with a checker, a held-out split and a
difficulty knob.

Every domain writes its problems as a one-line prompt ending in ``=`` and a short answer; the checker
computes the answer from the prompt itself, so any prompt can be checked without a stored dataset:

    addition  "2740+3190="     -> "58310"   operands and sum least significant digit first (lm.tasks)
    reverse   "rev:qwkfa="     -> "afkwq"   the letters backwards
    sort      "sort:530812="   -> "012358"  the digits in ascending order
    count     "count:b:abcbdab=" -> "3"     how often the letter before the second ':' occurs after it

``difficulty`` is the number of digits (addition) or characters (the others).

Thinking mode: addition and count also have a short worked trace, written before the answer and separated
from it by ``>``: the carry out of every digit position (addition, in writing order), or the running count
after every letter (count, last digit). ``"2740+3190="`` -> ``"0010>58310"``. The checker reads only what
follows the last ``>``, so a trace costs tokens but never changes the reward. Each domain also has a
typical mistake (dropped carries, a copy instead of a reversal, descending order, off by one): the answers
of an imperfect teacher, for SFT data that RL against the checker can improve on. Splits are disjoint by
construction: a problem is held out when a hash of its prompt falls in ``heldout_fraction``, so a sampler
of one split never emits a problem of the other, whatever its seed.
"""
from __future__ import annotations

import hashlib
import random
import re
import string
from dataclasses import dataclass

from tristream.lm.tasks import ArithmeticTask

SPLITS = ("train", "heldout")
TRACE_END = ">"  # separates a thinking-mode trace from the final answer


def final_answer(completion: str) -> str:
    """What the checker reads: the completion after its last ``>`` (all of it without one), stripped."""
    return completion.strip().rsplit(TRACE_END, 1)[-1].strip()


@dataclass(frozen=True)
class TextProblem:
    prompt: str
    answer: str  # the target completion: the answer, or in thinking mode the trace, ">" and the answer
    domain: str
    mode: str = "direct"  # "direct" or "think"


class Domain:
    """A family of problems. Subclasses set ``name``, ``prefix`` and ``answer_width`` and implement
    ``_draw`` (a random prompt) and ``answer`` (the checker's ground truth, from the prompt alone)."""

    name: str
    prefix: str  # every prompt of the domain starts with it (how a prompt's domain is recognised)
    answer_width: int  # the longest answer, in characters (= byte tokens)

    def __init__(self, difficulty: int, heldout_fraction: float = 0.1):
        if difficulty < 1:
            raise ValueError(f"text domain {self.name!r}: difficulty must be >= 1, got {difficulty}")
        if not 0.0 < heldout_fraction < 1.0:
            raise ValueError(f"text domain {self.name!r}: heldout_fraction must be in (0, 1), got {heldout_fraction}")
        self.difficulty, self.heldout_fraction = int(difficulty), float(heldout_fraction)

    def _draw(self, rng: random.Random, zero_digit_prob: float = 0.0) -> str:
        raise NotImplementedError

    def answer(self, prompt: str) -> str:
        raise NotImplementedError

    def mistake(self, prompt: str) -> str:
        """The domain's typical wrong answer to ``prompt``: what an imperfect teacher writes (SFT data with
        ``lm.teacher_error``); never equal to :meth:`answer` unless the problem makes them coincide."""
        raise NotImplementedError

    trace_width = 0  # characters of the thinking-mode trace (0: the domain has no thinking form)

    def trace(self, prompt: str, wrong: bool = False) -> str:
        """The worked steps of ``prompt`` that lead to its answer (to the domain's :meth:`mistake` when
        ``wrong``), written before the answer in thinking mode; domains with ``trace_width`` 0 have none."""
        raise NotImplementedError(f"text domain {self.name!r} has no thinking form")

    @property
    def thinks(self) -> bool:
        return self.trace_width > 0

    def reward(self, prompt: str, completion: str) -> float:
        """1.0 when the final answer of ``completion`` (after the last ``>``, whitespace ignored) is exactly
        the answer, else 0.0."""
        return float(final_answer(completion) == self.answer(prompt))

    def split_of(self, prompt: str) -> str:
        h = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") / 2.0 ** 64
        return "heldout" if h < self.heldout_fraction else "train"

    def sample(self, rng: random.Random, split: str, zero_digit_prob: float = 0.0,
               teacher_error: float = 0.0, mode: str = "direct") -> TextProblem:
        """A problem of ``split`` (rejection sampling on the prompt hash). ``zero_digit_prob``: addition's
        easier training operands (lm.tasks); other domains ignore it. ``teacher_error``: the probability that
        the answer given is the domain's :meth:`mistake` (imperfect SFT targets; the checker is unchanged).
        ``mode="think"``: the target completion is the trace, ``>`` and the answer."""
        while True:
            prompt = self._draw(rng, zero_digit_prob)
            if self.split_of(prompt) == split:
                wrong = teacher_error > 0 and rng.random() < teacher_error
                answer = self.mistake(prompt) if wrong else self.answer(prompt)
                if mode == "think":
                    answer = self.trace(prompt, wrong) + TRACE_END + answer
                return TextProblem(prompt, answer, self.name, mode)

    def describe(self) -> str:
        return f"{self.name} (difficulty {self.difficulty})"


class Addition(Domain):
    """The arithmetic task of :mod:`tristream.lm.tasks` (``difficulty`` digits per operand, reversed)."""

    name, prefix = "addition", ""

    def __init__(self, difficulty: int = 4, heldout_fraction: float = 0.1):
        super().__init__(difficulty, heldout_fraction)
        self.task = ArithmeticTask("+", digits=self.difficulty, reverse=True, heldout_fraction=heldout_fraction)
        self.answer_width = self.task.answer_width

    def _draw(self, rng, zero_digit_prob=0.0):
        def operand() -> int:
            if not zero_digit_prob:
                return rng.randrange(10 ** self.difficulty)
            return sum((0 if rng.random() < zero_digit_prob else rng.randint(0, 9)) * 10 ** i
                       for i in range(self.difficulty))
        return self.task.format(operand(), operand()).prompt

    def answer(self, prompt):
        return self.task.answer(prompt)

    def mistake(self, prompt):
        """Every carry dropped: each digit is (a_j + b_j) mod 10."""
        a, b = prompt[:-1].split("+")  # least significant digit first
        return "".join(str((int(x) + int(y)) % 10) for x, y in zip(a, b)) + "0"

    def split_of(self, prompt):  # the same split as lm.tasks, so an arithmetic-only SFT model is comparable
        return self.task.split_of(prompt)

    @property
    def trace_width(self):
        return self.difficulty

    def trace(self, prompt, wrong=False):
        """The carry out of every digit position, in writing order (all 0 for the dropped-carry mistake)."""
        if wrong:
            return "0" * self.difficulty
        a, b = prompt[:-1].split("+")
        carries, c = [], 0
        for x, y in zip(a, b):
            c = (int(x) + int(y) + c) // 10
            carries.append(str(c))
        return "".join(carries)


class _Characters(Domain):
    """Problems on a string of ``difficulty`` characters drawn from ``alphabet``; the answer has its length."""

    alphabet: str
    pattern: str  # regex of the string, for the checker

    def __init__(self, difficulty: int, heldout_fraction: float = 0.1):
        super().__init__(difficulty, heldout_fraction)
        self.answer_width = self.difficulty

    def _draw(self, rng, zero_digit_prob=0.0):
        return f"{self.prefix}{''.join(rng.choice(self.alphabet) for _ in range(self.difficulty))}="

    def text(self, prompt: str) -> str:
        return _body(self, prompt, self.pattern)


class Reverse(_Characters):
    name, prefix, alphabet, pattern = "reverse", "rev:", string.ascii_lowercase, r"[a-z]+"

    def __init__(self, difficulty: int = 5, heldout_fraction: float = 0.1):
        super().__init__(difficulty, heldout_fraction)

    def answer(self, prompt):
        return self.text(prompt)[::-1]

    def mistake(self, prompt):
        """The letters copied, not reversed."""
        return self.text(prompt)


class Sort(_Characters):
    name, prefix, alphabet, pattern = "sort", "sort:", string.digits, r"\d+"

    def __init__(self, difficulty: int = 6, heldout_fraction: float = 0.1):
        super().__init__(difficulty, heldout_fraction)

    def answer(self, prompt):
        return "".join(sorted(self.text(prompt)))

    def mistake(self, prompt):
        """Sorted the wrong way round."""
        return "".join(sorted(self.text(prompt), reverse=True))


class Count(Domain):
    """How many times a letter of ``abcd`` occurs in a string of ``difficulty`` such letters."""

    name, prefix = "count", "count:"
    letters = "abcd"

    def __init__(self, difficulty: int = 8, heldout_fraction: float = 0.1):
        super().__init__(difficulty, heldout_fraction)
        self.answer_width = len(str(self.difficulty))

    def _draw(self, rng, zero_digit_prob=0.0):
        target = rng.choice(self.letters)
        return f"{self.prefix}{target}:{''.join(rng.choice(self.letters) for _ in range(self.difficulty))}="

    def answer(self, prompt):
        target, _, text = _body(self, prompt, rf"[{self.letters}]:[{self.letters}]+").partition(":")
        return str(text.count(target))

    def mistake(self, prompt):
        """Off by one (the target letter itself counted too)."""
        return str(int(self.answer(prompt)) + 1)

    @property
    def trace_width(self):
        return self.difficulty

    def trace(self, prompt, wrong=False):
        """The running count after every letter, its last digit (starting from 1 for the off-by-one mistake)."""
        target, _, text = _body(self, prompt, rf"[{self.letters}]:[{self.letters}]+").partition(":")
        n, out = int(wrong), []
        for ch in text:
            n += ch == target
            out.append(str(n % 10))
        return "".join(out)


def _body(domain: Domain, prompt: str, pattern: str) -> str:
    """The part of ``prompt`` between the domain's prefix and the final '='; ValueError when malformed."""
    m = re.fullmatch(re.escape(domain.prefix) + f"({pattern})=", prompt)
    if m is None:
        raise ValueError(f"not a {domain.name!r} prompt: {prompt!r}")
    return m.group(1)


DOMAINS: dict[str, type[Domain]] = {d.name: d for d in (Addition, Reverse, Sort, Count)}


def make_domain(name: str, difficulty: int | None = None, heldout_fraction: float = 0.1) -> Domain:
    if name not in DOMAINS:
        raise ValueError(f"unknown text domain {name!r}; valid domains: {', '.join(DOMAINS)}")
    cls = DOMAINS[name]
    return cls(heldout_fraction=heldout_fraction) if difficulty is None else cls(difficulty, heldout_fraction)
