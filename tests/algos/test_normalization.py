"""Reward scaling by the running std of the discounted return, and value-target standardisation."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tristream.algos import RunningMeanStd, destandardize, scale_rewards, standardize

floats = st.floats(-1e3, 1e3, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(floats, min_size=1, max_size=20), min_size=1, max_size=6))
def test_running_statistics_equal_those_of_everything_seen(batches):
    stats = RunningMeanStd(count=0.0 + 1e-12)
    for b in batches:
        stats = stats.update(np.array(b))
    seen = np.concatenate([np.array(b) for b in batches])
    assert stats.mean == pytest.approx(seen.mean(), rel=1e-6, abs=1e-6)
    assert stats.var == pytest.approx(seen.var(), rel=1e-6, abs=1e-5)
    assert stats.count == pytest.approx(len(seen))


def test_update_is_pure():
    s = RunningMeanStd()
    s.update(np.ones(5))
    assert s == RunningMeanStd()


def test_scale_rewards_divides_by_the_std_of_the_discounted_return():
    r = np.array([1.0, 2.0, -1.0])
    scaled, ret, stats = scale_rewards(r, running_return=0.5, stats=RunningMeanStd(count=1e-12), gamma=0.9)
    returns = [0.9 * 0.5 + 1.0]
    returns += [0.9 * returns[-1] + 2.0, 0.9 * (0.9 * returns[-1] + 2.0) - 1.0]
    assert ret == pytest.approx(returns[-1])
    assert stats.var == pytest.approx(np.var(returns), rel=1e-9)
    np.testing.assert_allclose(scaled, r / np.sqrt(np.var(returns) + 1e-8), rtol=1e-6)
    assert scaled.dtype == np.float32


def test_scaled_returns_are_near_unit_scale_whatever_the_reward_units():
    """Dense rewards of magnitude ~100 (minus a distance in cm, say): after scaling, the discounted returns the
    critic must fit have a spread of about 1."""
    rng = np.random.default_rng(0)
    stats, ret, scaled_all = RunningMeanStd(), 0.0, []
    for episode in range(40):
        rewards = -100.0 * rng.uniform(0.5, 1.5, 50)
        scaled, ret, stats = scale_rewards(rewards, 0.0, stats, gamma=0.98)
        scaled_all.append(scaled)
    g = 0.98 ** np.arange(50)
    returns = [float((s * g).sum()) for s in scaled_all[10:]]
    assert 0.5 < np.std(np.concatenate(scaled_all[10:])) * 50 < 50  # rewards shrank by ~the return's spread
    assert all(abs(x) < 10 for x in returns)  # was ~ -3,500 unscaled


@settings(max_examples=50, deadline=None)
@given(st.lists(floats, min_size=2, max_size=40))
def test_standardize_inverts_destandardize_and_centres_what_the_statistics_saw(xs):
    x = np.array(xs)
    stats = RunningMeanStd(count=1e-12).update(x)
    z = standardize(x, stats, clip=np.inf)
    assert z.dtype == np.float32
    assert abs(float(z.mean())) < 1e-3 and (x.std() < 1e-3 or abs(float(z.std()) - 1.0) < 1e-3)
    np.testing.assert_allclose(destandardize(z, stats), x, rtol=1e-5, atol=1e-3 * max(1.0, np.abs(x).max()))


def test_standardize_clips_outliers():
    stats = RunningMeanStd(mean=-8.0, var=4.0, count=100.0)
    np.testing.assert_allclose(standardize(np.array([-8.0, -6.0, 100.0, -100.0]), stats),
                               [0.0, 1.0, 5.0, -5.0], atol=1e-6)
    np.testing.assert_allclose(destandardize(np.array([0.0, 1.0]), stats), [-8.0, -6.0], atol=1e-6)
