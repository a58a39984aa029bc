"""The machine a plan is for: cores, GPUs and nodes, written as YAML or as ``KEY=VALUE`` pairs.

    cores: 2            # CPU cores of one node (default: this machine's)
    nodes: 1            # nodes; env workers spread over them, the learner and inference on the first
    gpus: 0             # GPUs of the first node (the model places inference and the learner on them)
    gpu_speedup: 20.0   # how many times faster than one CPU core a GPU runs the policy's forward/backward
    link_gbps: 10.0     # bandwidth between nodes, for the requests and segments of env workers on other nodes
    memory_gb: 4.0      # the memory budget of the whole process tree (the planner's limit)

With ``gpus > 0`` the model runs forward passes and optimizer steps on a GPU at ``gpu_speedup`` times the
measured CPU speed (a prediction: the runtime itself places every role on the CPU today).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from tristream.cores import usable_cores


@dataclass(frozen=True)
class Machine:
    cores: int = dataclasses.field(default_factory=usable_cores)
    nodes: int = 1
    gpus: int = 0
    gpu_speedup: float = 20.0
    link_gbps: float = 10.0
    memory_gb: float = 4.0

    def __post_init__(self):
        for name, low in (("cores", 1), ("nodes", 1), ("gpus", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"machine: {name}={value!r} must be an integer >= {low}")
        for name in ("gpu_speedup", "link_gbps", "memory_gb"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"machine: {name}={value!r} must be a number > 0")

    def describe(self) -> str:
        gpus = f", {self.gpus} GPU(s) per node at {self.gpu_speedup:g}x a core" if self.gpus else ""
        nodes = f"{self.nodes} nodes x " if self.nodes > 1 else ""
        return f"{nodes}{self.cores} cores{gpus}, {self.memory_gb:g} GB budget"


def _fields() -> dict[str, type]:
    return {f.name: (int if f.name in ("cores", "nodes", "gpus") else float) for f in dataclasses.fields(Machine)}


def machine_from_dict(d: dict) -> Machine:
    """A machine from a mapping; an unknown or malformed field is an error naming it."""
    if not isinstance(d, dict):
        raise ValueError(f"machine: expected a mapping of {', '.join(_fields())}, got {type(d).__name__}")
    fields = _fields()
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"machine: unknown field(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    values = {}
    for name, value in d.items():
        if isinstance(value, str):
            try:
                value = fields[name](value)
            except ValueError:
                kind = "an integer" if fields[name] is int else "a number"
                raise ValueError(f"machine: {name}={value!r} is not {kind}") from None
        elif fields[name] is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        values[name] = value
    return Machine(**values)


def parse_machine(spec: str | None) -> Machine:
    """``spec``: None (this machine), a YAML file, or comma-separated ``KEY=VALUE`` pairs."""
    if not spec:
        return Machine()
    path = Path(spec)
    if path.suffix in (".yaml", ".yml", ".json"):
        if not path.is_file():
            raise FileNotFoundError(f"machine file {spec} not found")
        try:
            return machine_from_dict(yaml.safe_load(path.read_text()) or {})
        except (ValueError, yaml.YAMLError) as e:
            raise ValueError(f"machine file {spec}: {e}") from None
    pairs = {}
    for item in spec.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"machine: {item!r} is not KEY=VALUE (e.g. cores=16,gpus=1) nor a .yaml file")
        pairs[key.strip()] = value.strip()
    return machine_from_dict(pairs)
