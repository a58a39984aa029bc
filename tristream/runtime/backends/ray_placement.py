"""Placement of the roles on a Ray cluster, from the ``ray`` config section: what each actor reserves,
whether the cluster can hold them all, and the plan printed at start.

The check runs before any actor is created, against the alive nodes' total resources: Ray would leave
an actor that no node can hold pending forever, which looks like a hang. Roles are packed first-fit,
most constrained first (GPUs, custom resources, labels), the way Ray's scheduler would have to.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tristream.runtime.topology import Topology


class PlacementError(ValueError):
    """The cluster cannot hold the configured roles; the message names the role and what is missing."""


@dataclass(frozen=True)
class ActorRequest:
    role: str  # env_worker0, ..., inference (a RoleId), or learner
    section: str  # the config key that sets it: ray.env_worker or ray.inference
    resources: dict[str, float]  # CPU, GPU and custom resources per actor
    labels: dict[str, str] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``ActorClass.options``."""
        custom = {k: v for k, v in self.resources.items() if k not in ("CPU", "GPU")}
        opts: dict[str, Any] = {"num_cpus": self.resources.get("CPU", 0.0), "num_gpus": self.resources.get("GPU", 0.0),
                                "resources": custom}
        if self.labels:
            opts["label_selector"] = dict(self.labels)
        return opts


def _request(role: str, section: str, rc) -> ActorRequest:
    res = {"CPU": float(rc.num_cpus), "GPU": float(rc.num_gpus), **{k: float(v) for k, v in rc.resources.items()}}
    return ActorRequest(role, section, {k: v for k, v in res.items() if v > 0}, dict(rc.labels))


def requests(cfg, topology: Topology) -> list[ActorRequest]:
    """One request per role actor the backend creates (the topology's roles: ``runtime.env_workers`` env
    workers and one inference worker)."""
    return [_request(role, f"ray.{role.kind}", getattr(cfg.ray, role.kind)) for role in topology.roles]


def learner_request(cfg) -> ActorRequest:
    """The learner actor (``ray_learner.py``), which creates the role actors."""
    return _request("learner", "ray.learner", cfg.ray.learner)


def fmt_resources(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}" if resources else "{}"


def _node_name(node: dict) -> str:
    return f"{node['NodeManagerAddress']} ({node['NodeID'][:8]})"


def _schedulable(node: dict) -> dict[str, float]:
    return {k: float(v) for k, v in node["Resources"].items()
            if not k.startswith("node:") and k not in ("memory", "object_store_memory")}


def check_fits(reqs: list[ActorRequest], nodes: list[dict], placed: dict[str, str] | None = None) -> dict[str, str]:
    """Assign every actor to an alive node with enough total resources and matching labels; returns
    role -> node name, or raises ``PlacementError`` naming the first role that does not fit and why.
    ``placed`` pins roles that already run (role -> node id), e.g. the learner actor that checks."""
    placed = placed or {}
    alive = [n for n in nodes if n.get("Alive", n.get("alive", False))]
    left = {n["NodeID"]: _schedulable(n) for n in alive}
    order = sorted(reqs, key=lambda r: (r.role not in placed, -r.resources.get("GPU", 0.0), -len(r.resources),
                                        -len(r.labels), -r.resources.get("CPU", 0.0)))
    where: dict[str, str] = {}
    for r in order:
        for n in alive:
            if r.role in placed and n["NodeID"] != placed[r.role]:
                continue
            have = left[n["NodeID"]]
            labels_ok = all(n.get("Labels", {}).get(k) == v for k, v in r.labels.items())
            if labels_ok and all(have.get(k, 0.0) >= v - 1e-9 for k, v in r.resources.items()):
                for k, v in r.resources.items():
                    have[k] -= v
                where[r.role] = _node_name(n)
                break
        else:
            raise PlacementError(_why(r, reqs, alive, left))
    return {r.role: where[r.role] for r in reqs}


def _why(r: ActorRequest, reqs: list[ActorRequest], alive: list[dict], left: dict) -> str:
    same = [q for q in reqs if q.section == r.section]
    lines = [f"cannot place {r.role}: it needs {fmt_resources(r.resources)}"
             + (f" on a node labelled {r.labels}" if r.labels else "") + f" ({r.section}.*)"]
    for k, v in r.resources.items():
        total = sum(_schedulable(n).get(k, 0.0) for n in alive)
        if total == 0:
            lines.append(f"  no alive node offers {k!r} (declare it with ray start --resources / --num-gpus, "
                         f"or change {r.section})")
        elif total < v * len(same):
            lines.append(f"  {len(same)} actors of {r.section} need {v * len(same):g} {k} in total; the cluster "
                         f"has {total:g}")
    if r.labels and not any(all(n.get("Labels", {}).get(k) == v for k, v in r.labels.items()) for n in alive):
        lines.append(f"  no alive node carries the labels {r.labels}")
    for n in alive:
        free = {k: v for k, v in left[n["NodeID"]].items() if v > 1e-9}
        lines.append(f"  node {_node_name(n)}: has {fmt_resources(_schedulable(n))}, left after the roles placed "
                     f"so far {fmt_resources(free)}")
    if not alive:
        lines.append("  the cluster has no alive node")
    return "\n".join(lines)


def describe(reqs: list[ActorRequest], where: dict[str, str], title: str = "ray placement") -> str:
    lines = [f"{title}: {len(reqs)} actors"]
    for r in reqs:
        label = f", labels {r.labels}" if r.labels else ""
        lines.append(f"  {r.role}: {fmt_resources(r.resources)}{label} -> {where.get(r.role, '?')}")
    return "\n".join(lines)
