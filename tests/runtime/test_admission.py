"""Admission control as a pure object: the lag bound, sync's schedule at lag 0, restarts."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tristream.runtime.admission import Admission


@settings(max_examples=60, deadline=None)
@given(workers=st.integers(1, 4), lag=st.integers(0, 3), total=st.integers(1, 8), data=st.data())
def test_no_trained_sample_is_older_than_the_lag_bound(workers, lag, total, data):
    """Any interleaving of completions and learner steps: a rollout of step j starts with weights of version
    >= j - lag (the learner's version when it starts), and the learner trains step j at version j."""
    adm = Admission(workers, max_lag=lag, start_step=0, total_steps=total)
    learner = 0
    started: dict[int, list[int]] = {}  # step -> learner versions its rollouts started with
    while learner < total:
        for w, j in adm.admit(learner):
            started.setdefault(j, []).append(learner)
        choices = [("done", w) for w in adm.running] + ([("train",)] if adm.rollout_over(learner) else [])
        assert choices, "deadlock: nothing running and the step is not over"
        move = data.draw(st.sampled_from(choices))
        if move[0] == "done":
            adm.finished(move[1], adm.running[move[1]])
        else:
            adm.forget(learner)
            learner += 1
    assert sorted(started) == list(range(total)) and all(len(v) == workers for v in started.values())
    for j, versions in started.items():
        assert all(j - v <= lag for v in versions)  # trained at version j: lag j - v


def test_lag_zero_admits_exactly_the_sync_schedule():
    adm = Admission(2, max_lag=0, start_step=0, total_steps=3)
    assert adm.admit(0) == [(0, 0), (1, 0)]
    adm.finished(0, 0)
    assert adm.admit(0) == []  # worker 0 is idle but step 0 is not trained yet
    adm.finished(1, 0)
    assert adm.rollout_over(0) and adm.admit(0) == []
    assert adm.admit(1) == [(0, 1), (1, 1)]


def test_lag_one_lets_a_finished_worker_run_ahead():
    adm = Admission(2, max_lag=1, start_step=0, total_steps=5)
    adm.admit(0)
    adm.finished(0, 0)
    assert adm.admit(0) == [(0, 1)]  # one step ahead of the learner
    adm.finished(0, 1)
    assert adm.admit(0) == []  # two ahead: no


def test_restart_reruns_from_the_given_step_and_ignores_stale_messages():
    adm = Admission(2, max_lag=1, start_step=3, total_steps=6)
    assert adm.admit(3) == [(0, 3), (1, 3)]
    adm.restart(3)
    assert adm.finished(0, 3) is False  # sent before the restart: not running any more
    assert adm.admit(3) == [(0, 3), (1, 3)]
    with pytest.raises(ValueError, match="max_lag"):
        Admission(1, max_lag=-1, start_step=0, total_steps=1)
