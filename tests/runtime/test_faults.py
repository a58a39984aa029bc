"""Faults: a killed or failing role is restarted and training finishes (local backend), and what a restart
costs the step in progress (a serial backend with one failure injected)."""
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace
from pathlib import Path

import pytest
import torch

from tristream.envs import make_env
from tristream.envs.toy import ToyEnv
from tristream.metrics import tracker as tracker_mod
from tristream.runtime.backends import make_backend
from tristream.runtime.backends.base import RestartPolicy, RestartsExhausted
from tristream.runtime.messages import RoleRestarted, SegmentBatch, Telemetry
from tristream.runtime.backends.serial import SerialBackend
from tristream.runtime.learner import Learner
from tristream.runtime.pipeline import train_loop
from tristream.runtime.shm import SHM_DIR, block_tag
from tristream.policies.from_config import build_policy
from tristream.runtime.topology import INFERENCE, RoleId, Topology
from tristream.workflow.rl import rl_train


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


def broken_env(**kwargs):
    """A toy env whose simulator crashes on every step once the file TRISTREAM_TEST_MARKER exists."""
    marker = Path(os.environ["TRISTREAM_TEST_MARKER"])
    env = ToyEnv(**kwargs)
    step = env.step

    def failing_step(action):
        if marker.exists():
            raise RuntimeError("simulated broken simulator")
        return step(action)

    env.step = failing_step
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


class FailsOnce(SerialBackend):
    """The serial backend with one role failure: the ``after``-th segment batch of global step ``at`` is lost
    with its role, and every role is built again, as the local backend replaces them. Counts the segments it
    delivered to the learner."""

    def __init__(self, cfg, env_spec, *, at: int, after: int):
        self._args = (cfg, Topology.from_config(cfg), env_spec)
        super().__init__(*self._args)
        self.at, self.left, self.delivered = at, after, 0

    def learner_get(self, timeout: float) -> object:
        msg = super().learner_get(timeout)
        if isinstance(msg, SegmentBatch):
            if self.left and msg.segments[0].global_step == self.at:
                self.left -= 1
                if self.left == 0:
                    self.close()
                    SerialBackend.__init__(self, *self._args)
                    return RoleRestarted(RoleId.env_worker(0), "injected failure")
            self.delivered += len(msg.segments)
        return msg

    def learner_poll(self) -> object | None:
        """Nothing waiting every other time, as when roles are slower than the learner, so that the learner
        trains on a streamed step while its rollout goes on (the serial backend always has a message)."""
        self._idle = not getattr(self, "_idle", False)
        return None if self._idle else super().learner_poll()


def _run_serial(cfg, backend=None):
    spec = make_env("toy", image_size=cfg.env.image_size).spec
    torch.manual_seed(0)  # the same initial policy in every run
    policy = build_policy(cfg, spec)
    learner = Learner(policy, cfg.algo)
    rows = []
    train_loop(cfg, policy, spec, learner=learner, start_step=0, on_step=lambda step, m: rows.append(m),
               backend=backend or make_backend(cfg, spec))
    return learner, rows


@pytest.mark.parametrize("mode,after", [
    (["runtime.mode=sync"], 4),
    # async: the update has started on the step when the role fails (the 7th of its 8 segment batches), so
    # the step closes with what arrived and its incomplete GRPO groups are dropped
    (["runtime.mode=async", "runtime.max_policy_lag=0", "algo.advantage=grpo", "rollout.group_size=2",
      "rollout.episodes_per_env=2", "algo.global_batch=4", "algo.micro_batch=4"], 7),
    # async ahead of the learner: segments of the next step, received early, are lost with the restart
    (["runtime.mode=async", "runtime.max_policy_lag=1"], 2)])
def test_every_segment_received_is_trained_once_or_counted_dropped(tiny, mode, after):
    cfg = tiny("runtime.backend=serial", "train.steps=3", "runtime.audit_samples=true", *mode)
    spec = make_env("toy", image_size=cfg.env.image_size).spec
    backend = FailsOnce(cfg, spec, at=1, after=after)
    learner, rows = _run_serial(cfg, backend)
    assert backend.left == 0 and len(rows) == 3 and rows[-1]["restarts/env_worker0"] == 1
    trained = [k for r in rows for k in r["audit_keys"]]
    dropped = sum(r["segments_dropped"] for r in rows)
    assert len(set(trained)) == len(trained)
    assert dropped > 0 and len(trained) + dropped == backend.delivered
    if "algo.advantage=grpo" in mode:
        assert rows[1]["dropped_groups"] > 0 and rows[1]["episodes"] < 8  # the lost step closed short
    if "runtime.mode=sync" in mode:  # the step was rolled out again, identically: the run is undisturbed
        undisturbed, _ = _run_serial(cfg)
        assert all(torch.equal(a, b) for a, b in zip(learner.weights().values(), undisturbed.weights().values()))


@pytest.mark.slow  # 10 s or more (make test-fast skips it)
def test_a_role_that_keeps_failing_backs_off_then_stops_the_run_with_its_traceback_and_a_checkpoint(tiny, tmp_path,
                                                                                                   capsys):
    """After global step 2 the simulator crashes at every step: restarts back off (1 s, then 2 s), then past
    runtime.max_restarts the run stops with the role's traceback, and step 2 (the learner had not trained on
    step 3) is checkpointed although train.save_every is 10."""
    marker = tmp_path / "broken"
    cfg = tiny("runtime.backend=local", "train.steps=10", "train.save_every=10", "runtime.max_restarts=2",
               "env.name=tests.runtime.test_faults:broken_env", "run.name=storm")
    spec = make_env("toy", image_size=cfg.env.image_size).spec
    os.environ["TRISTREAM_TEST_MARKER"] = str(marker)
    original = tracker_mod.Tracker.log

    def log(self, step, metrics, phase="train"):
        original(self, step, metrics, phase)
        if step == 2:
            marker.write_text("from now on every env step fails")

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tracker_mod.Tracker, "log", log)
            t0 = time.monotonic()
            with pytest.raises(RestartsExhausted, match="(?s)failed 3 times.*simulated broken simulator"):
                rl_train(cfg, tmp_path / "storm", spec, progress=False)
    finally:
        del os.environ["TRISTREAM_TEST_MARKER"]
    out = capsys.readouterr().out
    assert "(restart 1 of at most 2" in out and "(restart 2 of at most 2" in out
    assert "in 1.0 s: it failed again" in out and time.monotonic() - t0 >= 1.0
    assert (tmp_path / "storm" / "checkpoints" / "latest").read_text().strip() == "step_000002"
    assert "resume with: tristream train --resume" in out


def test_restart_back_off_doubles_within_a_storm_and_resets_after_a_quiet_spell():
    now = [0.0]
    policy = RestartPolicy(max_restarts=10, backoff_s=1.0, max_backoff_s=4.0, storm_window_s=30.0,
                           clock=lambda: now[0])
    role, waits = RoleId.env_worker(0), []
    for t in (0, 5, 10, 15, 20, 25, 100):
        now[0] = t
        policy.failed(role, "boom")
        waits.append(policy.backoff(role))
    assert waits == [0.0, 1.0, 2.0, 4.0, 4.0, 4.0, 0.0]
    policy.failed(INFERENCE, "boom")  # another role's storm is its own
    assert policy.backoff(INFERENCE) == 0.0


class _FakeProc:
    def __init__(self, alive: bool, pid: int):
        self.alive, self.pid, self.exitcode = alive, pid, None if alive else -9

    def is_alive(self):
        return self.alive


class _TelemetryFlood:
    """A learner inbox that never runs dry: the live roles' telemetry, several messages a second."""

    def get(self, timeout):
        time.sleep(0.01)
        return Telemetry(role="inference", pid=2, spans=[])


def _flooded_backend(monkeypatch, env_worker_alive: bool):
    from tristream.runtime.backends.local import LocalBackend
    from tristream.runtime.telemetry import TelemetrySink
    b = LocalBackend.__new__(LocalBackend)
    b.learner_reader, b.telemetry = _TelemetryFlood(), TelemetrySink()
    b.cfg, b._stopped_since = SimpleNamespace(runtime=SimpleNamespace(timeout_s=1.0)), {}
    b.procs = {RoleId.env_worker(0): _FakeProc(env_worker_alive, 1), INFERENCE: _FakeProc(True, os.getpid())}
    monkeypatch.setattr(b, "role_failed", lambda role, reason: ("restarted", str(role), reason))
    return b


def test_a_dead_role_is_noticed_while_telemetry_keeps_arriving(monkeypatch):
    b = _flooded_backend(monkeypatch, env_worker_alive=False)
    t0 = time.monotonic()
    assert b.learner_get(timeout=60) == ("restarted", "env_worker0", "process exited with code -9")
    assert time.monotonic() - t0 < 2.0


def test_the_timeout_counts_from_the_last_message_that_was_not_telemetry(monkeypatch):
    b = _flooded_backend(monkeypatch, env_worker_alive=True)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="received nothing for 1 s"):
        b.learner_get(timeout=1.0)
    assert time.monotonic() - t0 < 4.0


def test_a_role_stopped_longer_than_the_timeout_is_restarted(monkeypatch):
    """SIGSTOP (or a debugger) leaves a process alive but silent: past runtime.timeout_s of being stopped it is
    treated as failed, while other roles' telemetry keeps arriving."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(sleeper.pid, signal.SIGSTOP)
        b = _flooded_backend(monkeypatch, env_worker_alive=True)
        b.procs[RoleId.env_worker(0)].pid = sleeper.pid
        t0 = time.monotonic()
        role = b.learner_get(timeout=60)[1]
        assert role == "env_worker0" and 1.0 <= time.monotonic() - t0 < 4.0
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_role_stopped_when_the_learner_times_out_is_restarted_not_fatal(monkeypatch):
    """The learner's wait began before the role was stopped: its timeout runs out before the role has been
    seen stopped for runtime.timeout_s, and the stopped role, the cause of the silence, is replaced."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(sleeper.pid, signal.SIGSTOP)
        b = _flooded_backend(monkeypatch, env_worker_alive=True)
        b.cfg.runtime.timeout_s = 30.0  # the stopped-for clock alone would take 30 s
        b.procs[RoleId.env_worker(0)].pid = sleeper.pid
        t0 = time.monotonic()
        restarted = b.learner_get(timeout=1.0)
        assert restarted[:2] == ("restarted", "env_worker0") and "while the learner received nothing" in restarted[2]
        assert time.monotonic() - t0 < 4.0
    finally:
        sleeper.kill()
        sleeper.wait()
