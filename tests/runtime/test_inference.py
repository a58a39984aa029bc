"""The InferenceWorker's batcher (lockstep, B_max, T_max) and its weight swaps."""
import copy
import time

import numpy as np
import pytest
import torch

from tristream.envs import make_env
from tristream.runtime.channels import SerialChannel
from tristream.runtime.inference import InferenceWorker
from tristream.runtime.messages import ActionReply, GroupDone, ObsRequest, Weights
from tristream.policies.from_config import build_policy
from tristream.types import ObsBatch


@pytest.fixture
def parts(tiny):
    env = make_env("toy", image_size=16)
    torch.manual_seed(0)
    policy = build_policy(tiny(), env.spec)
    return env, policy


def _request(env, group, n, step=0, min_version=0, sent_at=None):
    obs = ObsBatch.stack([env.reset(seed=group * 10 + i) for i in range(n)])
    return ObsRequest(worker_id=0, group_id=group, global_step=step, env_ids=list(range(group * 10, group * 10 + n)),
                      obs=obs, min_version=min_version, sent_at=time.time() if sent_at is None else sent_at)


def _worker(policy, **kw):
    inbox, out = SerialChannel(), SerialChannel()
    worker = InferenceWorker(copy.deepcopy(policy), inbox, {0: out}, **kw)
    inbox.put(Weights(0, policy.state_dict()))
    return worker, inbox, out


def _replies(out):
    replies = []
    while out.qsize():
        replies.append(out.get())
    return replies


def test_lockstep_waits_for_every_running_group(parts):
    env, policy = parts
    worker, inbox, out = _worker(policy, num_groups=3, batch_max=0)
    inbox.put(_request(env, 0, 2))
    inbox.put(_request(env, 1, 2))
    worker.poll(timeout=0)
    assert not _replies(out)  # group 2 has not asked yet
    inbox.put(GroupDone(2, 0))  # ... and never will in this step
    worker.poll(timeout=0)
    assert sorted(r.group_id for r in _replies(out)) == [0, 1]
    assert worker.batch_sizes == [4]


def test_dynamic_batch_fires_at_b_max_without_splitting_requests(parts):
    env, policy = parts
    worker, inbox, out = _worker(policy, num_groups=4, batch_max=4, batch_timeout_ms=60_000)
    for g in range(3):
        inbox.put(_request(env, g, 3))
    worker.poll(timeout=0)
    assert worker.batch_sizes == [6]  # 3 < 4: a second whole request joins; the batch overshoots
    assert len(_replies(out)) == 2
    worker.poll(timeout=0)
    assert worker.batch_sizes == [6]  # the third request waits for B_max or T_max


def test_dynamic_batch_fires_at_t_max(parts):
    env, policy = parts
    worker, inbox, out = _worker(policy, num_groups=4, batch_max=100, batch_timeout_ms=50)
    inbox.put(_request(env, 0, 2, sent_at=time.time()))
    worker.poll(timeout=0)
    assert not _replies(out)
    time.sleep(0.06)
    worker.poll(timeout=0)
    assert [r.group_id for r in _replies(out)] == [0]


class _RecordingInbox(SerialChannel):
    """A serial channel that records how long each read was allowed to wait."""

    def __init__(self):
        super().__init__()
        self.timeouts = []

    def get(self, timeout=None):
        self.timeouts.append(timeout)
        return super().get(timeout)


def test_a_waiting_request_bounds_the_read_to_its_t_max(parts):
    env, policy = parts
    inbox, out = _RecordingInbox(), SerialChannel()
    worker = InferenceWorker(copy.deepcopy(policy), inbox, {0: out}, num_groups=4, batch_max=100, batch_timeout_ms=20)
    inbox.put(Weights(0, policy.state_dict()))
    inbox.put(_request(env, 0, 2, sent_at=time.time()))
    worker.poll(timeout=1.0)  # nothing waited yet: the read may take the full second
    assert inbox.timeouts[0] == 1.0 and not _replies(out)
    worker.poll(timeout=1.0)
    worker.poll(timeout=None)
    assert all(t is not None and t <= 0.02 for t in inbox.timeouts[-2:])  # bounded by the request's T_max
    time.sleep(0.03)
    worker.poll(timeout=1.0)
    assert inbox.timeouts[-1] == 0.0 and [r.group_id for r in _replies(out)] == [0]


def test_requests_wait_for_their_min_version_and_weights_swap_between_batches(parts):
    env, policy = parts
    worker, inbox, out = _worker(policy, num_groups=1, batch_max=1, deterministic=True)
    newer = copy.deepcopy(policy)
    with torch.no_grad():
        for p in newer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    inbox.put(_request(env, 0, 2, min_version=1))
    worker.poll(timeout=0)
    assert not _replies(out)  # version 0 may not answer a request that needs version 1
    inbox.put(Weights(1, newer.state_dict()))
    worker.poll(timeout=0)
    (reply,) = _replies(out)
    assert reply.version == 1
    req = _request(env, 0, 2)
    with torch.no_grad():
        expected = newer.act(req.obs.as_dict(), deterministic=True).actions.numpy()
    np.testing.assert_allclose(reply.actions, expected, atol=1e-6)
