"""The topology of a run: every role and who sends what to whom, derived once from the config.

    Learner  --Weights(version)------------------> InferenceWorker
    pipeline --StartRollout(step, min_version)---> EnvWorker w          (w = 0 .. env_workers - 1)
    EnvWorker --ObsRequest(group)----------------> InferenceWorker --ActionReply(group)--> EnvWorker
    EnvWorker, InferenceWorker --SegmentBatch, RolloutDone, Telemetry, RoleError--> Learner

``make_backend`` builds one :class:`Topology` and hands it to the backend, which only decides where each
role lives (this process, a child process, a Ray actor) and what carries its inbox; the roles, their
inbox sizes and the shard plan are the same in every backend.
"""
from __future__ import annotations

from dataclasses import dataclass

from tristream.runtime.shard import ShardPlan


class RoleId(str):
    """A role's name (``env_worker3``, ``inference``) that carries its ``kind`` and ``index``, so nothing
    parses a name back. It is the string everywhere a name is shown or keyed (metrics, telemetry, placement)."""

    KINDS = ("env_worker", "inference")
    kind: str
    index: int

    def __new__(cls, kind: str, index: int = 0):
        if kind not in cls.KINDS:
            raise ValueError(f"unknown role kind {kind!r}; valid: {', '.join(cls.KINDS)}")
        if index < 0 or (kind == "inference" and index != 0):
            raise ValueError(f"role index {index} for {kind}: env workers count from 0, the inference worker is 0")
        obj = super().__new__(cls, f"env_worker{index}" if kind == "env_worker" else "inference")
        obj.kind, obj.index = kind, index
        return obj

    def __getnewargs__(self):  # pickles (processes, Ray) as (kind, index), not as the plain name
        return self.kind, self.index

    @classmethod
    def env_worker(cls, index: int) -> "RoleId":
        return cls("env_worker", index)

    @property
    def is_env_worker(self) -> bool:
        return self.kind == "env_worker"


INFERENCE = RoleId("inference")


@dataclass(frozen=True)
class Topology:
    plan: ShardPlan

    @classmethod
    def from_config(cls, cfg) -> "Topology":
        return cls(ShardPlan(cfg.rollout.num_envs, cfg.runtime.env_workers, cfg.runtime.groups_per_worker))

    @property
    def env_workers(self) -> tuple[RoleId, ...]:
        return tuple(RoleId.env_worker(w) for w in range(self.plan.env_workers))

    @property
    def roles(self) -> tuple[RoleId, ...]:
        """Every role a backend starts: the env workers, then the inference worker (the learner is the
        pipeline's own process)."""
        return (*self.env_workers, INFERENCE)

    @property
    def role_inbox_size(self) -> int:
        """Room for every group's request (or reply) in flight plus control messages."""
        return 4 * self.plan.num_groups + 8

    @property
    def learner_inbox_size(self) -> int:
        """Finished segments and telemetry; a role blocks (back-pressure) when the learner falls this far behind."""
        return max(64, 4 * self.plan.num_envs)
