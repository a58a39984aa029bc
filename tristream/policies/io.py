"""Save and load policies: ``<name>.safetensors`` (weights) beside ``<name>.json`` (how to rebuild them).

The JSON holds {"policy": registry name, "config": policy.config_dict(), "env_spec": {...}, "extra": ...};
load_policy rebuilds the policy through the registry (make_policy) and loads the weights strictly.
Both files are written atomically (temporary file + os.replace), weights first.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..envs.base import EnvSpec

FORMAT_VERSION = 1


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    """Keep the JSON-serialisable entries of d; name the ones dropped (e.g. objects in EnvSpec.extra)."""
    out, dropped = {}, []
    for k, v in d.items():
        try:
            json.dumps(v)
            out[k] = v
        except (TypeError, ValueError):
            dropped.append(k)
    if dropped:
        out["_dropped_non_json"] = sorted(map(str, dropped))
    return out


def env_spec_to_dict(spec: EnvSpec) -> dict[str, Any]:
    d = dataclasses.asdict(spec)
    d["camera_names"], d["tasks"] = list(spec.camera_names), list(spec.tasks)
    d["extra"] = _json_safe(dict(spec.extra))
    return d


def env_spec_from_dict(d: dict[str, Any]) -> EnvSpec:
    d = dict(d)
    d["camera_names"] = tuple(d["camera_names"])
    d["tasks"] = tuple(d.get("tasks", ()))
    return EnvSpec(**d)


def _paths(path: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """(weights, json) for a directory, a .json / .safetensors file, or a path stem."""
    p = Path(path)
    if p.is_dir():
        stem = p / name
    elif p.suffix in (".json", ".safetensors"):
        stem = p.with_suffix("")
    else:
        stem = p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_policy(policy, directory: str | os.PathLike, name: str = "policy", extra: dict | None = None) -> Path:
    """Write ``directory/<name>.safetensors`` and ``directory/<name>.json``; returns the JSON path."""
    registry_name = getattr(policy, "registry_name", None)
    if not registry_name:
        raise ValueError(f"{type(policy).__name__} has no registry_name; build it with make_policy(name, ...)")
    env_spec = getattr(policy, "env_spec", None)
    if not isinstance(env_spec, EnvSpec):
        raise ValueError(f"{type(policy).__name__} has no env_spec attribute (an EnvSpec) to save")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_path, json_path = directory / f"{name}.safetensors", directory / f"{name}.json"
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in policy.state_dict().items()}
    meta = {
        "format_version": FORMAT_VERSION,
        "policy": registry_name,
        "config": policy.config_dict(),
        "env_spec": env_spec_to_dict(env_spec),
        "extra": _json_safe(extra) if extra else {},
        "weights": weights_path.name,
    }
    text = json.dumps(meta, indent=2, sort_keys=True)
    _atomic_write(weights_path, lambda tmp: save_file(tensors, str(tmp), metadata={"policy": registry_name}))
    _atomic_write(json_path, lambda tmp: tmp.write_text(text))
    return json_path


def read_policy_meta(path: str | os.PathLike, name: str = "policy") -> dict[str, Any]:
    """The parsed JSON beside a saved policy (path: directory, .json, .safetensors, or stem)."""
    _, json_path = _paths(path, name)
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path}: no such file (expected the policy metadata JSON written by save_policy)")
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{json_path}: corrupt policy metadata JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{json_path}: policy metadata must be a JSON object, got {type(meta).__name__}")
    missing = [k for k in ("policy", "config", "env_spec") if k not in meta]
    if missing:
        raise ValueError(f"{json_path}: policy metadata lacks key(s) {missing}")
    return meta


def load_policy(path: str | os.PathLike, name: str = "policy", map_location: str | torch.device = "cpu"):
    """Rebuild a policy saved by save_policy (path: its directory, either file, or the common stem)."""
    from . import make_policy

    weights_path, json_path = _paths(path, name)
    meta = read_policy_meta(path, name)
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: no such file (expected the policy weights beside {json_path.name})")
    try:
        env_spec = env_spec_from_dict(meta["env_spec"])
    except (TypeError, KeyError) as e:
        raise ValueError(f"{json_path}: bad env_spec ({e})") from e
    policy = make_policy(meta["policy"], env_spec, **meta["config"])
    try:
        tensors = load_file(str(weights_path), device=str(map_location))
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError on truncated files)
        raise ValueError(f"{weights_path}: corrupt safetensors file ({type(e).__name__}: {e})") from e
    expected = policy.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{weights_path}: tensors do not match the policy: missing {missing}, unexpected {unexpected}")
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise ValueError(
                f"{weights_path}: tensor {k!r} has shape {tuple(tensors[k].shape)}, the policy expects {tuple(v.shape)}"
            )
    policy.load_state_dict(tensors, strict=True)
    return policy.to(map_location)
