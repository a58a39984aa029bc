"""The canonical order of a step's segments: independent of arrival, released as a prefix."""
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from tristream.runtime.stream_order import StreamOrder


def _episodes(lengths, episodes_per_env=1):
    """Segments (env, k) per env: lengths[e] segments per episode, the last of each ends it."""
    out = {}
    for e, n in enumerate(lengths):
        out[e] = [SimpleNamespace(env_id=e, k=k, episode_done=(k % n == n - 1), rollout_end=False)
                  for k in range(n * episodes_per_env)]
    return out


def _interleave(per_env, picks):
    """One arrival order: each env's segments in order, envs interleaved by ``picks``."""
    queues = {e: list(s) for e, s in per_env.items()}
    order = []
    for p in picks:
        live = [e for e in queues if queues[e]]
        if not live:
            break
        order.append(queues[live[p % len(live)]].pop(0))
    return order + [s for e in queues for s in queues[e]]


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 5), min_size=1, max_size=6), picks=st.lists(st.integers(0, 10), max_size=40),
       chunk=st.integers(1, 4), by_group=st.booleans(), episodes=st.integers(1, 2))
def test_released_order_does_not_depend_on_arrival(lengths, picks, chunk, by_group, episodes):
    per_env = _episodes(lengths, episodes)
    n = sum(len(s) for s in per_env.values())
    kw = dict(episodes_per_env=episodes, group_size=2, by_group=by_group)
    at_once = StreamOrder(**kw)
    at_once.add(_interleave(per_env, []))
    reference = [(s.env_id, s.k) for s in at_once.flush()]
    streamed = StreamOrder(range(len(lengths)), **kw)
    arrivals, got = _interleave(per_env, picks), []
    for lo in range(0, len(arrivals), chunk):
        streamed.add(arrivals[lo:lo + chunk])
        got += [(s.env_id, s.k) for s in streamed.release()]
    assert len(got) == n  # every env finished: the whole step was released without a flush
    got += [(s.env_id, s.k) for s in streamed.flush()]
    assert got == reference and len(set(got)) == n


def test_time_major_waits_for_the_slowest_env():
    per_env = _episodes([3, 3])
    order = StreamOrder([0, 1])
    order.add(per_env[0])  # env 0 is done, env 1 has sent nothing
    assert [(s.env_id, s.k) for s in order.release()] == [(0, 0)]
    order.add(per_env[1][:1])
    assert [(s.env_id, s.k) for s in order.release()] == [(1, 0), (0, 1)]


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=6), picks=st.lists(st.integers(0, 10), max_size=40),
       chunk=st.integers(1, 4), ends=st.lists(st.integers(0, 5), max_size=6))
def test_fixed_horizon_releases_each_env_up_to_its_last_segment_of_the_step(lengths, picks, chunk, ends):
    """rollout.steps_per_env > 0: episodes end anywhere (or not at all) within the step; an env is finished with
    the step when its segment marked rollout_end arrives, and the order still ignores arrival."""
    per_env = {e: [SimpleNamespace(env_id=e, k=k, episode_done=k in ends, rollout_end=k == n - 1) for k in range(n)]
               for e, n in enumerate(lengths)}
    at_once = StreamOrder(fixed_horizon=True)
    at_once.add(_interleave(per_env, []))
    reference = [(s.env_id, s.k) for s in at_once.flush()]
    streamed = StreamOrder(range(len(lengths)), fixed_horizon=True)
    arrivals, got = _interleave(per_env, picks), []
    for lo in range(0, len(arrivals), chunk):
        streamed.add(arrivals[lo:lo + chunk])
        got += [(s.env_id, s.k) for s in streamed.release()]
    assert got == reference and len(got) == sum(lengths)  # all released before any flush
    assert streamed.flush() == []


def test_fixed_horizon_and_groups_do_not_mix():
    import pytest
    with pytest.raises(ValueError, match="GRPO"):
        StreamOrder([0], fixed_horizon=True, by_group=True)
