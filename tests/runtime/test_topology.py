"""The topology (roles from the shard plan), role ids, and the one restart policy of every backend."""
import pickle

import pytest

from tristream.runtime.backends.base import RestartPolicy
from tristream.runtime.messages import RoleRestarted
from tristream.runtime.shard import noise_key
from tristream.runtime.topology import INFERENCE, RoleId, Topology


def test_role_ids_carry_kind_and_index_and_read_as_their_name():
    r = RoleId.env_worker(3)
    assert (r, r.kind, r.index, r.is_env_worker) == ("env_worker3", "env_worker", 3, True)
    assert INFERENCE == "inference" and not INFERENCE.is_env_worker
    back = pickle.loads(pickle.dumps(r))
    assert type(back) is RoleId and back.index == 3 and {r: 1}["env_worker3"] == 1
    with pytest.raises(ValueError, match="unknown role kind 'learnr'; valid: env_worker, inference"):
        RoleId("learnr")
    with pytest.raises(ValueError, match="role index 5 for inference"):
        RoleId("inference", 5)
    with pytest.raises(ValueError, match="role index -1 for env_worker"):
        RoleId.env_worker(-1)


def test_an_env_worker_process_loads_no_torch():
    """The local backend's module (what a spawned env worker imports to run its role) and the env worker
    itself import neither torch nor the policies."""
    import subprocess
    import sys
    code = ("import sys, tristream.runtime.backends.local, tristream.runtime.env_worker, tristream.runtime.roles; "
            "print(sorted(m for m in ('torch', 'tristream.policies') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_topology_lists_every_role_from_the_shard_plan(tiny):
    t = Topology.from_config(tiny("rollout.num_envs=12", "runtime.env_workers=3", "runtime.groups_per_worker=2"))
    assert t.roles == ("env_worker0", "env_worker1", "env_worker2", "inference")
    assert [r.index for r in t.env_workers] == [0, 1, 2]
    assert t.plan.num_groups == 6 and t.role_inbox_size == 4 * 6 + 8 and t.learner_inbox_size == 64


def test_restart_policy_counts_per_role_and_gives_up_past_the_limit(capsys):
    policy = RestartPolicy(max_restarts=1)
    msg = policy.failed(RoleId.env_worker(0), "Traceback...\nValueError: boom", where="node 10.0.0.1")
    assert isinstance(msg, RoleRestarted) and msg.role == "env_worker0"
    out = capsys.readouterr().out
    assert "env_worker0 (node 10.0.0.1) failed (ValueError: boom); restarting every role (restart 1 of at most 1" in out
    policy.failed(INFERENCE, "killed")  # another role has its own count
    with pytest.raises(RuntimeError, match=r"env_worker0 failed 2 times \(runtime.max_restarts=1\); last failure: x"):
        policy.failed(RoleId.env_worker(0), "x")


def test_noise_keys_are_distinct_where_decisions_differ_and_stable():
    keys = {noise_key(0, step, env, ep, t) for step in range(3) for env in range(8) for ep in range(2)
            for t in range(0, 60, 4)}
    assert len(keys) == 3 * 8 * 2 * 15
    assert noise_key(1, 2, 3, 4, 5) == noise_key(1, 2, 3, 4, 5) != noise_key(2, 2, 3, 4, 5)
    assert noise_key(0, 0, 0, 0, 0) == 0x4BC8BCBEF5733E0D  # a pure function: the same in every process and version
