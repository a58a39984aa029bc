"""Two Ray nodes on one machine (a head and a node offering the custom resource ``sim``), each its own
``ray start`` process tree on loopback, and ``tristream train`` joining them with the env workers placed on
the ``sim`` node by configuration.

The nodes are ``tristream.bench.ray_nodes.LoopbackCluster``'s (never ``ray stop``, which would stop every
Ray instance of the machine).
"""
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from tristream.bench.ray_nodes import ENV, LoopbackCluster  # noqa: E402


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head (1 CPU, resource head=1) and a second node (1 CPU, sim=2); the last test crashes the second."""
    cluster = LoopbackCluster(tmp_path_factory.mktemp("nodes"), ["--num-cpus=1", '--resources={"head": 1}'],
                              ["--num-cpus=1", '--resources={"sim": 2}'])
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def init_policy(tmp_path_factory):
    """A fresh policy to start RL from (train.init), so the runs skip collecting demos and SFT."""
    from tests.conftest import tiny_config
    from tristream.envs import make_env
    from tristream.policies.io import save_policy
    from tristream.policies.from_config import build_policy
    out = tmp_path_factory.mktemp("init")
    cfg = tiny_config(out)
    save_policy(build_policy(cfg, make_env("toy", image_size=cfg.env.image_size).spec), out / "policy")
    return out / "policy"


def _train_cmd(address: str, init: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "tristream.cli", "train", "--preset", "tiny", "env.name=toy", "--no-progress",
            f"run.dir={run_dir}", "run.name=multi", f"train.init={init}", "runtime.backend=ray",
            f"ray.address={address}", "ray.env_worker.resources.sim=1", "ray.inference.resources.head=1",
            "eval.episodes=2", "eval.videos=0", *overrides]


@pytest.mark.slow  # 10 s or more (make test-fast skips it)
def test_env_workers_run_on_the_sim_node_and_training_completes(two_nodes, init_policy, tmp_path):
    out = subprocess.run(_train_cmd(two_nodes.address, init_policy, tmp_path, "train.steps=2"), capture_output=True,
                         text=True, timeout=240, env=ENV)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # The placement is printed by the learner actor: Ray prefixes its lines with "(LearnerActor pid=N)".
    found = re.findall(r"^.*?\s+(env_worker\d|inference|learner): .* -> node \S+ \((\w+)\)", out.stdout, re.M)
    nodes = dict(found)
    assert set(nodes) == {"env_worker0", "env_worker1", "inference", "learner"}, out.stdout
    assert nodes["env_worker0"] == nodes["env_worker1"] != nodes["inference"]  # sim node vs head
    assert nodes["learner"] == nodes["inference"]  # no constraint in ray.learner: the driver's node (the head)
    # another node than inference: images through the object store, not /dev/shm
    assert "observation images: Ray object store for env_worker0, env_worker1" in out.stdout
    assert (tmp_path / "multi" / "checkpoints" / "latest").exists()
    assert "RL: 2 global steps" in out.stdout


@pytest.mark.slow  # 10 s or more (make test-fast skips it)
def test_a_lost_node_is_an_error_naming_the_role_and_node(two_nodes, init_policy, tmp_path):
    """Kill the sim node mid-run (SIGKILL to its whole process group: a crash, not a drain): its env workers
    die, and with no node left offering 'sim' the restart fails with an error naming the role and its node,
    instead of waiting for ever."""
    log = tmp_path / "train.log"
    cmd = _train_cmd(two_nodes.address, init_policy, tmp_path, "train.steps=200", "ray.start_timeout_s=20")
    train = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=ENV)
    try:
        deadline = time.monotonic() + 180
        while "step 1/200" not in log.read_text() and train.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "step 1/200" in log.read_text(), log.read_text()[-3000:]
        assert two_nodes.crash_node()
        assert train.wait(timeout=120) != 0
    finally:
        if train.poll() is None:
            train.kill()
    text = log.read_text()
    named = r"env_worker\d \(node \S+ \(\w+\), pid \d+\) failed and the roles cannot be started again"
    assert re.search(named, text), text[-3000:]
    why = text.split("cannot be started again")[-1]
    # the restart either sees the node gone already, or places actors on it before Ray declares it dead
    assert "no alive node offers 'sim'" in why or "its node has died" in why, why[:3000]
