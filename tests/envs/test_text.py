"""Text domains and the text env: checkers, disjoint splits, difficulty, the mix, and clear errors."""
import random

import numpy as np
import pytest

from tristream.envs import make_env
from tristream.envs.text.domains import DOMAINS, make_domain
from tristream.envs.text.env import TextEnv
from tristream.envs.text.mix import TextMix
from tristream.lm.tokenizer import ByteTokenizer

TOK = ByteTokenizer()


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_checker_accepts_the_answer_and_rejects_a_changed_one(name):
    d = make_domain(name)
    rng = random.Random(0)
    for _ in range(50):
        p = d.sample(rng, "train")
        assert d.reward(p.prompt, p.answer) == 1.0 and d.reward(p.prompt, f" {p.answer}\n") == 1.0
        wrong = p.answer[:-1] + ("1" if p.answer[-1] != "1" else "2")
        assert d.reward(p.prompt, wrong) == 0.0 and d.reward(p.prompt, "") == 0.0
        assert len(p.answer) <= d.answer_width


def test_answers_are_the_tasks_they_claim():
    assert make_domain("reverse").answer("rev:abcde=") == "edcba"
    assert make_domain("sort").answer("sort:530812=") == "012358"
    assert make_domain("count").answer("count:b:abcbdabb=") == "4"
    assert make_domain("addition", 2).answer("21+43=") == "640"  # 12 + 34 = 046, least significant digit first
    with pytest.raises(ValueError, match="not a 'sort' prompt"):
        make_domain("sort").answer("sort:ab=")


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_splits_are_disjoint_by_construction(name):
    d = make_domain(name, heldout_fraction=0.3)
    train = {d.sample(random.Random(s), "train").prompt for s in range(400)}
    held = {d.sample(random.Random(s), "heldout").prompt for s in range(400)}
    assert not train & held
    assert all(d.split_of(p) == "train" for p in train) and all(d.split_of(p) == "heldout" for p in held)


def test_difficulty_sets_the_problem_size():
    for name, size in (("reverse", 9), ("sort", 3), ("count", 12)):
        easy, hard = make_domain(name, 2), make_domain(name, size)
        assert len(hard.sample(random.Random(1), "train").prompt) - len(easy.sample(random.Random(1), "train").prompt) \
            == size - 2
    assert make_domain("addition", 6).answer_width == 7


def test_mix_weights_pick_domains_and_heldout_is_balanced():
    mix = TextMix(["reverse", "sort"], weights=[3, 1])
    names = [mix.sample(s, "train").domain for s in range(2000)]
    assert 0.7 < names.count("reverse") / len(names) < 0.8
    held = [mix.sample(s, "heldout").domain for s in range(100)]
    assert held.count("reverse") == held.count("sort") == 50
    assert mix.reward("sort:321=", "123") == 1.0 and mix.domain_of("rev:ab=").name == "reverse"


def test_env_is_one_step_per_problem_with_the_checker_as_reward():
    env = make_env("text", domains=["reverse"], difficulty=4)
    obs = env.reset(seed=3)
    assert obs == env.reset(seed=3) and obs["images"].shape == (0, 0, 0, 3) and obs["state"].shape == (0,)
    prompt = obs["instruction"]
    answer = env.problem.answer
    assert answer == prompt[4:-1][::-1]
    tokens = TOK.encode(answer, eos=True)
    action = np.array(tokens + [TOK.PAD] * (env.spec.action_dim - len(tokens)), np.float32)
    _, reward, terminated, truncated, info = env.step(action)
    assert (reward, terminated, truncated, info["success"], info["task"]) == (1.0, True, False, True, "reverse")
    assert env.step(np.full(env.spec.action_dim, TOK.EOS, np.float32))[1] == 0.0
    assert env.spec.action_dim == 5 and env.spec.tasks == ("reverse",) and env.spec.extra["text"]


def test_eval_seeds_draw_heldout_problems():
    env = make_env("text")
    d = env.mix.domains
    for seed in (0, 1, 2, 10_000_000, 10_000_001, 10_000_002, 10_000_003):
        env.reset(seed)
        assert d[env.problem.domain].split_of(env.problem.prompt) == env.split_of_seed(seed)
    assert env.split_of_seed(9_999_999) == "train" and env.split_of_seed(10_000_000) == "heldout"


def test_bad_names_fail_naming_the_valid_ones():
    with pytest.raises(ValueError, match="valid domains: addition, reverse, sort, count"):
        make_env("text", domains=["addition", "mult"])
    with pytest.raises(ValueError, match="Did you mean 'text/sort'"):
        make_env("text/sorting")
    with pytest.raises(ValueError, match="fixed to domain 'sort'"):
        make_env("text/sort", domains=["count"])
    with pytest.raises(ValueError, match="difficulty names"):
        make_env("text", domains=["sort"], difficulty={"count": 3})
    with pytest.raises(ValueError, match="weights"):
        make_env("text", domains=["sort", "count"], weights=[1])
    with pytest.raises(ValueError, match="max_new_tokens"):
        make_env("text", domains=["sort"], max_new_tokens=3)


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_an_imperfect_teacher_writes_the_domains_mistake(name):
    d = make_domain(name)
    rng = random.Random(3)
    problems = [d.sample(rng, "train", teacher_error=0.6) for _ in range(400)]
    wrong = [p for p in problems if d.reward(p.prompt, p.answer) == 0.0]
    assert all(p.answer == d.mistake(p.prompt) for p in wrong)
    assert 0.5 < len(wrong) / len(problems) < 0.7  # minus the rare problems whose mistake is the answer


def test_mistakes_are_the_documented_ones():
    assert make_domain("reverse").mistake("rev:abc=") == "abc"
    assert make_domain("sort").mistake("sort:132=") == "321"
    assert make_domain("count").mistake("count:a:aab=") == "3"
    assert make_domain("addition", 2).mistake("99+11=") == "000"  # 99 + 11 without carries: 0 0, no carry out


def test_thinking_traces_are_the_worked_steps_of_their_answers():
    """Addition: answer digit j = (a_j + b_j + carry into j) mod 10, with carry j the trace's digit j - 1;
    count: the trace ends at the answer; the mistakes' traces lead to the mistakes."""
    add, count = make_domain("addition"), make_domain("count")
    rng = random.Random(0)
    for _ in range(200):
        p = add.sample(rng, "train")
        a, b = p.prompt[:-1].split("+")
        for wrong in (False, True):
            carries = [0] + [int(c) for c in add.trace(p.prompt, wrong)]
            answer = add.mistake(p.prompt) if wrong else add.answer(p.prompt)
            digits = [(int(x) + int(y) + (0 if wrong else carries[j])) % 10 for j, (x, y) in enumerate(zip(a, b))]
            assert answer == "".join(map(str, digits)) + str(carries[-1])
        q = count.sample(rng, "train")
        assert count.trace(q.prompt)[-1] == count.answer(q.prompt)[-1]
        assert count.trace(q.prompt, wrong=True)[-1] == count.mistake(q.prompt)[-1]
        assert len(add.trace(p.prompt)) == add.trace_width and len(count.trace(q.prompt)) == count.trace_width
    assert not make_domain("reverse").thinks and not make_domain("sort").thinks


def test_modes_tag_prompts_and_the_checker_reads_only_the_final_answer():
    mix = TextMix(modes=["direct", "think"])
    assert mix.tasks == ["addition/direct", "addition/think", "reverse/direct", "sort/direct", "count/direct",
                         "count/think"]
    held = mix.problems("heldout", 400, seed=3)
    labels = [mix.label(p.domain, p.mode) for p in held]
    assert {t: labels.count(t) for t in mix.tasks} == {"addition/direct": 50, "addition/think": 50,
                                                       "reverse/direct": 100, "sort/direct": 100,
                                                       "count/direct": 50, "count/think": 50}
    for p in held:
        assert p.prompt.startswith("/think " if p.mode == "think" else "/no_think ")
        assert (">" in p.answer) == (p.mode == "think")
        assert mix.reward(p.prompt, p.answer) == 1.0
        final = p.answer.rsplit(">", 1)[-1]
        assert mix.reward(p.prompt, final) == 1.0  # a direct answer to a thinking prompt counts
        assert mix.reward(p.prompt, "123>" + final) == 1.0  # whatever the trace says
        assert mix.reward(p.prompt, final + ">") == 0.0
    assert mix.answer_width == 4 + 1 + 5  # addition's trace, ">", its answer
    train = mix.problems("train", 400, seed=0)
    assert {p.mode for p in train if p.domain == "count"} == {"direct", "think"}
    assert {p.mode for p in train if p.domain == "sort"} == {"direct"}


def test_text_env_with_modes_reports_tasks_per_mode_and_tokens():
    env = TextEnv(modes=["direct", "think"])
    assert env.spec.tasks == tuple(TextMix(modes=["direct", "think"]).tasks) and env.spec.action_dim == 11
    for seed in range(10_000_000, 10_000_008):
        env.reset(seed)
        ids = TOK.encode(env.problem.answer, eos=True)
        action = np.full(env.spec.action_dim, TOK.PAD, np.float32)
        action[:len(ids)] = ids
        _, r, done, _, info = env.step(action)
        assert r == 1.0 and done and info["task"] == f"{env.problem.domain}/{env.problem.mode}"
        assert info["tokens"] == len(ids)


def test_bad_modes_fail_naming_the_valid_ones():
    with pytest.raises(ValueError, match="direct, think"):
        TextMix(modes=["direct", "slow"])
    with pytest.raises(ValueError, match=r"\['reverse'\] have no thinking form.*addition"):
        TextMix(["addition", "reverse"], modes=["think"])
