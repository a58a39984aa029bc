import pytest
from hypothesis import given, strategies as st

from tristream.lm.tasks import ArithmeticTask, make_task


def test_format_and_reversed_answer():
    t = ArithmeticTask("+", digits=4)
    p = t.format(472, 913)
    assert p.prompt == "2740+3190=" and len(p.prompt) == t.prompt_len  # 0472 and 0913, reversed
    assert p.answer == "58310"  # 1385 -> 01385 -> reversed
    plain = ArithmeticTask("+", digits=4, reverse=False).format(472, 913)
    assert (plain.prompt, plain.answer) == ("0472+0913=", "01385")
    assert ArithmeticTask("*", digits=2).format(12, 34).answer == "8040"  # 408 -> 0408 -> reversed


@given(st.integers(0, 999), st.integers(0, 999), st.sampled_from(["+", "*"]), st.booleans())
def test_checker_matches_integer_arithmetic(a, b, op, reverse):
    t = ArithmeticTask(op, digits=3, reverse=reverse)
    p = t.format(a, b)
    text = p.answer[::-1] if reverse else p.answer
    assert int(text) == (a + b if op == "+" else a * b)
    assert t.answer(p.prompt) == p.answer
    assert t.reward(p.prompt, p.answer) == 1.0
    assert t.reward(p.prompt, " " + p.answer + "\n") == 1.0
    wrong = str((int(p.answer[0]) + 1) % 10) + p.answer[1:]
    assert t.reward(p.prompt, wrong) == 0.0
    assert t.reward(p.prompt, p.answer + "0") == 0.0


def test_splits_are_disjoint_and_seeded():
    t = ArithmeticTask("+", digits=2, heldout_fraction=0.2)  # small space: collisions would show
    train = t.problems("train", 500, seed=0)
    held = t.problems("heldout", 100, seed=0)
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    assert all(t.split_of(p.prompt) == "heldout" for p in held)
    assert t.problems("heldout", 100, seed=0) == held
    assert t.problems("train", 50, seed=1) != train[:50]
    frac = sum(t.split_of(t.format(a, b).prompt) == "heldout" for a in range(100) for b in range(100)) / 1e4
    assert 0.17 < frac < 0.23


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="unknown LM task"):
        make_task("division")
    with pytest.raises(ValueError, match="not a 4-digit"):
        ArithmeticTask("+", 4).answer("12+34=")
    with pytest.raises(ValueError, match="split"):
        ArithmeticTask("+", 4).problems("test", 1, 0)


def test_zero_digit_sampling():
    t = ArithmeticTask("+", digits=4, heldout_fraction=0.2)
    # p = 0 is the uniform sampler, stream for stream (held-out evaluation sets never change)
    assert t.problems("heldout", 50, seed=3, zero_digit_prob=0.0) == t.problems("heldout", 50, seed=3)
    probs = t.problems("train", 2000, seed=0, zero_digit_prob=0.5)
    assert all(t.split_of(p.prompt) == "train" for p in probs)  # still train-only
    assert t.problems("train", 20, seed=0, zero_digit_prob=0.5) == probs[:20]  # seeded
    digits = [c for p in probs for c in p.prompt if c.isdigit()]
    zeros = digits.count("0") / len(digits)
    assert abs(zeros - (0.5 + 0.5 / 10)) < 0.02  # P(0) = p + (1 - p) / 10
    nonzero = [c for c in digits if c != "0"]
    assert set(nonzero) == set("123456789")  # the other digits stay uniform
    counts = [nonzero.count(c) for c in "123456789"]
    assert max(counts) / min(counts) < 1.25
    uniform = [c for p in t.problems("train", 2000, seed=0) for c in p.prompt if c.isdigit()]
    assert abs(uniform.count("0") / len(uniform) - 0.1) < 0.02
    with pytest.raises(ValueError, match="zero_digit_prob"):
        t.problems("train", 1, 0, zero_digit_prob=1.0)
