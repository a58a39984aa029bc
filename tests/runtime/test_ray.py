"""The Ray backend on one local Ray instance shared by the module: the CLI in every mode, equivalence with
the serial backend, a killed or failing env actor, impossible placements, and the placement check."""
import json
import os
import time

import pytest

ray = pytest.importorskip("ray")

from tristream.cli import main  # noqa: E402
from tristream.envs import make_env  # noqa: E402
from tristream.metrics.tracker import read_metrics  # noqa: E402
from tristream.policies.io import save_policy  # noqa: E402
from tristream.runtime.backends import make_backend  # noqa: E402
from tristream.runtime.backends.ray_placement import ActorRequest, PlacementError, check_fits, requests  # noqa: E402
from tristream.runtime.topology import Topology  # noqa: E402
from tristream.runtime.learner import Learner  # noqa: E402
from tristream.runtime.pipeline import train_loop  # noqa: E402
from tristream.policies.from_config import build_policy  # noqa: E402
from tests.runtime.test_backends import _run, _train_rows  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ray_instance(tmp_path_factory):
    """One small local instance for the module; every backend in it finds Ray connected and reuses it.
    Ray workers inherit this process's environment as it is now: the marker of the flaky env goes in first."""
    marker = tmp_path_factory.mktemp("ray") / "failed"
    os.environ["TRISTREAM_TEST_MARKER"] = str(marker)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 * 2**20, logging_level="WARNING")
    yield marker
    ray.shutdown()
    del os.environ["TRISTREAM_TEST_MARKER"]


def _spec(cfg):
    return make_env(cfg.env.name, image_size=cfg.env.image_size).spec


@pytest.mark.parametrize("mode", ["sync", "async-rollout", "async"])
def test_train_command_runs_on_ray_in_every_mode(tiny, tmp_path, mode):
    cfg = tiny()
    save_policy(build_policy(cfg, _spec(cfg)), tmp_path / "init")
    assert main(["train", "--preset", "tiny", "env.name=toy", "--no-progress", f"run.dir={tmp_path}", "run.name=rl",
                 f"train.init={tmp_path / 'init'}", "runtime.backend=ray", f"runtime.mode={mode}",
                 "runtime.groups_per_worker=2", "train.steps=2"]) == 0
    rows = read_metrics(tmp_path / "rl", "train")
    assert len(rows) == 2 and all(r["episodes"] == 4 for r in rows)
    assert max(r["policy_lag_max"] for r in rows) <= (1 if mode == "async" else 0)


@pytest.mark.slow  # 10 s or more (make test-fast skips it)
def test_serial_and_ray_sync_train_identically(tiny, tmp_path):
    """Same seed: the same episodes, actions and losses (lockstep batches are ordered by group)."""
    rows = {}
    for backend, shm in (("serial", "true"), ("ray", "true"), ("ray_store", "false")):
        cfg = tiny(f"runtime.backend={backend.removesuffix('_store')}", "train.steps=2", "runtime.groups_per_worker=2",
                   f"ray.shared_memory={shm}")
        _run(cfg, tmp_path / backend)
        rows[backend] = _train_rows(tmp_path / backend)
    assert len(rows["serial"]) == 2
    assert rows["ray"][0]["policy_loss"] == rows["serial"][0]["policy_loss"]
    assert rows["ray"] == rows["serial"] == rows["ray_store"]  # images via /dev/shm or the object store


def _train(cfg, on_step=None):
    spec = _spec(cfg)
    policy = build_policy(cfg, spec)
    learner = Learner(policy, cfg.algo)
    backend = make_backend(cfg, spec)
    rows = []

    def step_done(step, metrics):
        rows.append(metrics)
        if on_step:
            on_step(step, backend)

    try:
        last = train_loop(cfg, policy, spec, learner=learner, start_step=0, on_step=step_done, backend=backend)
    finally:
        backend.close()
    return last, rows


@pytest.mark.parametrize("shm,line", [("true", "node shared memory for env_worker0, env_worker1"),
                                      ("false", "Ray object store for env_worker0, env_worker1")])
def test_images_go_through_node_shared_memory_when_on_the_inference_node(tiny, capfd, shm, line):
    """One node: env workers write images to /dev/shm and requests carry the block's name (ray.shared_memory);
    switched off, they go through the object store. (The backend runs in this process here, so its
    printout is captured; the CLI prints the same from the learner actor.)"""
    _, rows = _train(tiny("runtime.backend=ray", "train.steps=1", "runtime.groups_per_worker=2",
                          f"ray.shared_memory={shm}"))
    assert len(rows) == 1 and rows[0]["episodes"] == 4
    assert f"observation images: {line}" in capfd.readouterr().out


@pytest.mark.slow  # 10 s or more (make test-fast skips it)
def test_killed_env_actor_and_failing_env_are_restarted_and_training_finishes(tiny, ray_instance):
    """In step 3 an env raises (test_faults' flaky env, armed by the module fixture); after step 3 the test
    kills env worker 0's actor (as a lost node would). Each time every role actor is replaced and the lost
    rollout runs again from scratch."""
    cfg = tiny("runtime.backend=ray", "train.steps=4", "env.name=tests.runtime.test_faults:flaky_env")
    killed = []
    shm_before = _shm_blocks()

    def kill(step, backend):
        if step == 3:
            killed.append(backend.nodes["env_worker0"]["pid"])
            ray.kill(backend.actors["env_worker0"])

    last, rows = _train(cfg, kill)
    assert killed and ray_instance.exists()
    assert last == 4 and len(rows) == 4
    assert sum(rows[2].get(f"restarts/env_worker{w}", 0) for w in (0, 1)) == 1  # the raising env
    assert sum(rows[3].get(f"restarts/env_worker{w}", 0) for w in (0, 1)) == 2  # and the kill
    assert all(r["episodes"] == 4 for r in rows)
    # the killed actor's image blocks were unlinked (by the inference actor) before the actors were replaced
    assert _shm_blocks() - shm_before == set()


def _shm_blocks() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("psm_")} if os.path.isdir("/dev/shm") else set()


@pytest.mark.parametrize("override, missing", [
    ("ray.env_worker.resources.sim=1", "no alive node offers 'sim'"),
    ("ray.inference.num_gpus=1", "no alive node offers 'GPU'"),
    ("ray.env_worker.num_cpus=1.5", "2 actors of ray.env_worker need 3 CPU in total; the cluster has 2"),
    ("ray.inference.labels.tier=gpu", "no alive node carries the labels {'tier': 'gpu'}"),
])
def test_impossible_placement_fails_at_start_naming_the_role(tiny, override, missing):
    cfg = tiny("runtime.backend=ray", override)
    with pytest.raises(PlacementError) as err:
        make_backend(cfg, _spec(cfg))
    role = "inference" if "inference" in override else "env_worker"
    assert f"cannot place {role}" in str(err.value) and missing in str(err.value)


def _stop_seen(stop=None):
    """Runs in the learner actor: waits for the stop the driver forwards."""
    deadline = time.monotonic() + 30
    while not stop() and time.monotonic() < deadline:
        time.sleep(0.05)
    return stop()


def _fail():
    raise KeyError("no such thing")


def test_learner_actor_runs_the_function_in_another_process_and_forwards_stop(tiny):
    from tristream.runtime.backends.ray_learner import run_in_learner_actor
    from tristream.workflow.rl import StopFlag
    cfg = tiny("runtime.backend=ray")
    assert run_in_learner_actor(cfg, os.getpid) != os.getpid()
    flag = StopFlag()  # not entered: no signal handlers in the test process; set it as a signal would
    flag.set = True
    assert run_in_learner_actor(cfg, _stop_seen, stop=flag) is True
    with pytest.raises(KeyError, match="no such thing"):  # the function's own exception, re-raised here
        run_in_learner_actor(cfg, _fail)
    deadline = time.monotonic() + 20  # the actor is killed after each call (ray.kill returns at once)
    while ray.available_resources().get("CPU") != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray.available_resources().get("CPU") == 2


def test_learner_actor_placement_is_checked(tiny):
    from tristream.runtime.backends.ray_learner import run_in_learner_actor
    with pytest.raises(PlacementError, match=r"cannot place learner: it needs \{CPU: 0.5, GPU: 1\} \(ray.learner"):
        run_in_learner_actor(tiny("runtime.backend=ray", "ray.learner.num_gpus=1"), os.getpid)
    # the default shares fill the module's 2-CPU instance exactly; one more half CPU for the learner does not fit
    with pytest.raises(PlacementError, match="cannot place"):
        run_in_learner_actor(tiny("runtime.backend=ray", "ray.learner.num_cpus=1"), os.getpid)


@pytest.mark.slow  # 10 s or more (make test-fast skips it)
def test_ray_overhead_example_compares_driver_and_learner_actor(capsys):
    from examples.ray_overhead import main as ray_overhead
    ray_overhead(["--preset", "tiny", "env.name=toy", "runtime.groups_per_worker=2", "--repeats", "1",
                  "--measure-steps", "1"])
    out = capsys.readouterr().out
    assert "repeat 1 driver" in out and "repeat 1 actor" in out and "actor / driver = " in out
    assert "LearnerActor" in out.split("repeat 1 actor")[1]  # its CPU seconds were found and counted


def _node(node_id, resources, labels=None):
    return {"NodeID": node_id * 8, "NodeManagerAddress": "10.0.0.1", "Alive": True,
            "Resources": {"memory": 1e9, f"node:{node_id}": 1.0, **resources}, "Labels": labels or {}}


def test_placement_packs_roles_by_their_constraints(tiny):
    cfg = tiny("ray.env_worker.resources.sim=1", "ray.env_worker.num_cpus=1", "ray.inference.num_gpus=1",
               "ray.inference.labels.tier=gpu")
    reqs = requests(cfg, Topology.from_config(cfg))
    assert [r.role for r in reqs] == ["env_worker0", "env_worker1", "inference"]
    assert reqs[0].options() == {"num_cpus": 1.0, "num_gpus": 0.0, "resources": {"sim": 1.0}}
    gpu = _node("g", {"CPU": 4, "GPU": 1}, {"tier": "gpu"})
    sim = _node("s", {"CPU": 2, "sim": 2})
    where = check_fits(reqs, [gpu, sim])
    assert where == {"env_worker0": "10.0.0.1 (ssssssss)", "env_worker1": "10.0.0.1 (ssssssss)",
                     "inference": "10.0.0.1 (gggggggg)"}
    with pytest.raises(PlacementError, match="cannot place env_worker1"):  # the sim node holds one, not two
        check_fits(reqs, [gpu, _node("s", {"CPU": 1, "sim": 2})])
    dead = dict(gpu, Alive=False)
    with pytest.raises(PlacementError, match="cannot place inference"):
        check_fits(reqs, [dead, sim])


def test_requests_without_shares_ask_for_nothing():
    assert ActorRequest("inference", "ray.inference", {}).options() == {"num_cpus": 0.0, "num_gpus": 0.0,
                                                                        "resources": {}}


@pytest.mark.parametrize("override, message", [
    ("ray.env_worker.resources.CPU=1", "use num_cpus / num_gpus"),
    ("ray.address=nohost", "expected '' (start a local instance), 'auto', host:port"),
    ("ray.env_worker.resources.sim=0", "amounts must be > 0"),
])
def test_ray_config_errors_name_the_key(tiny, override, message):
    with pytest.raises(ValueError, match="ray") as err:
        tiny(override)
    assert message in str(err.value)


@pytest.mark.slow  # 10 s or more (make test-fast skips it)
def test_bench_throughput_compares_ray_and_local_interleaved(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "throughput", "--preset", "tiny", "env.name=toy", "--out", str(out), "--repeats", "1",
                 "--measure-steps", "1", "--modes", "sync@local,sync@ray", "runtime.groups_per_worker=2"]) == 0
    result = json.loads((out / "throughput.json").read_text())
    ray_run = result["modes"]["sync@ray"]
    assert ray_run["median"] > 0 and result["ratio_ray_vs_local"]["sync"] > 0
    assert {"env_worker0", "env_worker1", "inference", "learner"} <= set(ray_run["busy_fraction"])  # roles' telemetry
    assert "sync: ray / local = " in capsys.readouterr().out


def test_language_policy_trains_on_ray(text, tmp_path):
    """The LM on the text env through Ray actors, async: the same roles as a robot policy."""
    from tests.runtime.test_lm_rl import _rl
    rows = _rl(text("runtime.backend=ray", "runtime.mode=async", "algo.loss=fiberpo"), tmp_path / "run")
    assert len(rows) == 2 and all(r["samples"] == 8 and r["episodes"] == 8 for r in rows)
    assert max(r["policy_lag_max"] for r in rows) <= 1
