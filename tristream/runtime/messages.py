"""The messages roles send each other (all picklable; arrays travel as numpy)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tristream.metrics.trace import Telemetry  # noqa: F401  (a message too; defined with its tracer)
from tristream.runtime.topology import RoleId
from tristream.types import ObsBatch, Segment


@dataclass
class StartRollout:
    """Pipeline -> EnvWorker: run ``episodes_per_env`` episodes per env (or, ``steps_per_env`` > 0, that many
    decisions per env, continuing unfinished episodes) with policy >= ``min_version``."""

    global_step: int
    min_version: int
    episodes_per_env: int
    steps_per_env: int = 0


@dataclass
class Stop:
    """Pipeline -> any role: finish and exit."""


@dataclass
class ObsRequest:
    """EnvWorker -> InferenceWorker: observations of one group's active envs."""

    worker_id: int
    group_id: int  # global group index
    global_step: int
    env_ids: list[int]
    obs: ObsBatch
    min_version: int
    sent_at: float = 0.0
    seq: int = 0  # per-group request number: a reply to an older request is ignored
    noise_keys: list[int] | None = None  # per env: the key of its sampling noise (shard.noise_key)


@dataclass
class GroupDone:
    """EnvWorker -> InferenceWorker: this group has no more requests in ``global_step`` (lockstep batching)."""

    group_id: int
    global_step: int


@dataclass
class ActionReply:
    """InferenceWorker -> EnvWorker: actions for one request."""

    group_id: int
    env_ids: list[int]
    actions: np.ndarray  # [n, K, A]
    logp: np.ndarray  # [n, L]
    values: np.ndarray  # [n]
    version: int
    seq: int = 0


@dataclass
class Weights:
    """Learner -> InferenceWorker: a complete state dict and the version it defines."""

    version: int
    state_dict: dict[str, Any]


@dataclass
class SegmentBatch:
    """EnvWorker -> Learner: finished segments."""

    worker_id: int
    segments: list[Segment]


@dataclass
class RolloutDone:
    """EnvWorker -> Learner: every group of this worker finished ``global_step``'s episodes."""

    worker_id: int
    global_step: int
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class RoleRestarted:
    """Backend -> pipeline: a role died (or raised) and every role was started again."""

    role: RoleId
    reason: str


@dataclass
class RoleError:
    """Any role -> pipeline: a role failed; carries the formatted traceback."""

    role: RoleId
    traceback: str
    pid: int = 0
