"""Verifiable text tasks generated in code: multi-digit arithmetic with a checker (reward 1 or 0).

A problem is a prompt and its answer, both plain text::

    prompt  "2740+3190="     472 + 913: operands zero-padded to ``digits``, least significant digit first
    answer  "58310"          the sum 1385 padded to digits + 1 (01385), least significant digit first

Zero padding gives every problem the same layout; writing every number least significant digit first lets
a left-to-right model emit the digit it can already compute (the carry flows in writing order), and puts
answer digit j at a fixed distance from operand digits j, so the task is learnable by a tiny model in
minutes (see "Teaching Arithmetic to Small Transformers", Lee et al. 2023). ``reverse=False`` writes all
numbers the usual way round (much harder for a small model). ``op="*"`` is the harder multiplication
variant (answer width 2 x digits).

Splits are disjoint by construction: a problem is held-out when a hash of its prompt falls in the held-out
fraction, so a training sampler never emits a held-out problem whatever its seed. Sampling is seeded:
``task.problems("heldout", n, seed)`` is the same list on every machine.
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Literal

SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Problem:
    prompt: str
    answer: str


class ArithmeticTask:
    """``a op b`` for ``digits``-digit operands; reward 1 when the completion is exactly the answer."""

    def __init__(self, op: Literal["+", "*"] = "+", digits: int = 4, reverse: bool = True,
                 heldout_fraction: float = 0.1):
        if op not in ("+", "*"):
            raise ValueError(f"task op must be '+' or '*', got {op!r}")
        if digits < 1:
            raise ValueError(f"task digits must be >= 1, got {digits}")
        if not 0.0 < heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
        self.op, self.digits, self.reverse, self.heldout_fraction = op, digits, reverse, heldout_fraction
        self.answer_width = digits + 1 if op == "+" else 2 * digits
        self._pattern = re.compile(rf"^(\d{{{digits}}}){re.escape(op)}(\d{{{digits}}})=$")

    @property
    def prompt_len(self) -> int:
        """Characters (= byte tokens) in every prompt."""
        return 2 * self.digits + 2

    def _write(self, value: int, width: int) -> str:
        text = f"{value:0{width}d}"
        return text[::-1] if self.reverse else text

    def format(self, a: int, b: int) -> Problem:
        prompt = f"{self._write(a, self.digits)}{self.op}{self._write(b, self.digits)}="
        return Problem(prompt, self.answer(prompt))

    def answer(self, prompt: str) -> str:
        """The correct answer to ``prompt``, computed from the prompt itself (the checker's ground truth)."""
        m = self._pattern.match(prompt)
        if m is None:
            raise ValueError(f"not a {self.digits}-digit '{self.op}' prompt: {prompt!r}")
        a, b = (int(x[::-1] if self.reverse else x) for x in m.groups())
        return self._write(a + b if self.op == "+" else a * b, self.answer_width)

    def reward(self, prompt: str, completion: str) -> float:
        """1.0 when ``completion`` (surrounding whitespace ignored) is exactly the answer, else 0.0."""
        return float(completion.strip() == self.answer(prompt))

    def split_of(self, prompt: str) -> str:
        h = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") / 2.0 ** 64
        return "heldout" if h < self.heldout_fraction else "train"

    def problems(self, split: str, n: int, seed: int, zero_digit_prob: float = 0.0) -> list[Problem]:
        """``n`` problems of ``split`` (rejection sampling on the prompt hash), reproducible from ``seed``.

        Operands are uniform over [0, 10^digits) unless ``zero_digit_prob`` > 0: then every operand digit
        is 0 with that probability and uniform otherwise. Uniform problems give the first answer digit,
        (a_0 + b_0) mod 10, no correlation with either operand digit alone, so nothing rewards attending to
        one of them before the other is attended to as well: a tiny model sits on a plateau for thousands
        of steps (docs/lm.md). With zero digits, ``a_j = 0`` makes answer digit j a copy of ``b_j``, a
        first-order signal for each lookup. Meant for training; evaluate on uniform problems.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not 0.0 <= zero_digit_prob < 1.0:
            raise ValueError(f"zero_digit_prob must be in [0, 1), got {zero_digit_prob}")
        rng = random.Random(f"{self.op}{self.digits}:{split}:{seed}")
        hi = 10 ** self.digits - 1

        def operand() -> int:
            if zero_digit_prob == 0.0:
                return rng.randint(0, hi)
            return sum((0 if rng.random() < zero_digit_prob else rng.randint(0, 9)) * 10 ** i
                       for i in range(self.digits))

        out: list[Problem] = []
        while len(out) < n:
            p = self.format(operand(), operand())
            if self.split_of(p.prompt) == split:
                out.append(p)
        return out

    def describe(self) -> str:
        order = "least significant digit first" if self.reverse else "most significant digit first"
        return (f"{self.digits}-digit a{self.op}b, answers {self.answer_width} digits, numbers {order}, "
                f"{self.heldout_fraction:.0%} of problems held out")


TASKS = {"addition": "+", "multiplication": "*"}


def make_task(name: str, digits: int = 4, reverse: bool = True, heldout_fraction: float = 0.1) -> ArithmeticTask:
    if name not in TASKS:
        raise ValueError(f"unknown LM task {name!r}; valid: {', '.join(TASKS)}")
    return ArithmeticTask(TASKS[name], digits=digits, reverse=reverse, heldout_fraction=heldout_fraction)
