"""Faults on the local backend: a killed or failing role is restarted and training finishes."""
import os
import signal
from pathlib import Path

from tristream.envs import make_env
from tristream.envs.toy import ToyEnv
from tristream.runtime.backends import make_backend
from tristream.runtime.learner import Learner
from tristream.runtime.pipeline import train_loop
from tristream.runtime.shm import SHM_DIR, block_tag
from tristream.policies.from_config import build_policy


def flaky_env(**kwargs):
    """A toy env that raises once in the whole test (after its third reset), marked by a file."""
    marker = os.environ.get("TRISTREAM_TEST_MARKER", "")
    env = ToyEnv(**kwargs)
    step, resets = env.step, [0]
    reset = env.reset

    def counting_reset(seed):
        resets[0] += 1
        return reset(seed)

    def failing_step(action):
        if resets[0] >= 3 and marker and not Path(marker).exists():
            Path(marker).write_text("failed once")
            raise RuntimeError("simulated simulator crash")
        return step(action)

    env.reset, env.step = counting_reset, failing_step
    return env


def _run(cfg, kill=None, steps=4):
    spec = make_env("toy", image_size=cfg.env.image_size).spec
    policy = build_policy(cfg, spec)
    learner = Learner(policy, cfg.algo)
    backend = make_backend(cfg, spec)
    rows = []

    def on_step(step, metrics):
        rows.append(metrics)
        if step == 1 and kill:
            os.kill(backend.procs[kill].pid, signal.SIGKILL)

    try:
        last = train_loop(cfg, policy, spec, learner=learner, start_step=0, on_step=on_step, backend=backend)
    finally:
        backend.close()
    return last, rows


def _blocks(cfg):
    """The run's image blocks in /dev/shm (runtime/shm.py names them by run directory and driver pid)."""
    return sorted(p.name for p in SHM_DIR.glob(block_tag(Path(cfg.run.dir) / cfg.run.name) + "*"))


def test_killed_env_worker_is_replaced_and_training_finishes(tiny):
    cfg = tiny("runtime.backend=local", "train.steps=4")
    last, rows = _run(cfg, kill="env_worker0")
    assert last == 4 and len(rows) == 4
    assert rows[-1].get("restarts/env_worker0") == 1
    assert _blocks(cfg) == []  # the killed worker's blocks went with its replacement, the rest at close


def test_killed_inference_is_replaced_and_training_finishes(tiny):
    cfg = tiny("runtime.backend=local", "runtime.mode=async", "runtime.groups_per_worker=2", "train.steps=4")
    last, rows = _run(cfg, kill="inference")
    assert last == 4
    assert rows[-1].get("restarts/inference") == 1


def test_env_that_raises_is_restarted_and_nothing_is_half_trained(tiny, tmp_path):
    marker = tmp_path / "failed"
    cfg = tiny("runtime.backend=local", "train.steps=3", "algo.advantage=grpo", "rollout.group_size=2",
               "env.name=tests.runtime.test_faults:flaky_env")
    os.environ["TRISTREAM_TEST_MARKER"] = str(marker)
    try:
        last, rows = _run(cfg)
    finally:
        del os.environ["TRISTREAM_TEST_MARKER"]
    assert marker.exists() and last == 3 and len(rows) == 3
    assert sum(r.get("restarts/env_worker0", 0) + r.get("restarts/env_worker1", 0) for r in rows[-1:]) == 1
    # the lost rollout was run again from scratch: every step trained on all of its episodes
    assert all(r["episodes"] == 4 for r in rows)
