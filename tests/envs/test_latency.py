import time

import numpy as np

from tristream.envs.latency import LatencyEnv
from tristream.envs.toy import ToyEnv


def test_latency_model_adds_long_tailed_time_and_keeps_the_data():
    plain, slow = ToyEnv(), LatencyEnv(ToyEnv(), step_ms=2.0, reset_ms=1.0, sigma=1.0, seed=0)
    a = plain.reset(seed=3)
    t0 = time.perf_counter()
    b = slow.reset(seed=3)
    durations = []
    for _ in range(40):
        action = np.array([0.3, -0.2], np.float32)
        t = time.perf_counter()
        ra = plain.step(action)
        rb = slow.step(action)
        durations.append(time.perf_counter() - t)
        np.testing.assert_array_equal(ra[0]["images"], rb[0]["images"])
        assert ra[1:4] == rb[1:4]
        if ra[2] or ra[3]:
            break
    np.testing.assert_array_equal(a["images"], b["images"])
    assert time.perf_counter() - t0 > 0.02  # at least the medians' worth of sleep
    assert max(durations) > 2 * np.median(durations)  # a long tail, not a constant


def test_register_env_is_top_level():
    import tristream
    from tristream.registry import ENVS

    tristream.register_env("test_toy_alias", lambda **kw: ToyEnv(**kw), overwrite=True)
    assert "test_toy_alias" in ENVS.names()
