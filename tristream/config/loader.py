"""Typed-config machinery: nested dataclasses <- defaults + YAML presets + dotted overrides.

Works for any tree of nested ``@dataclass`` classes whose leaves are ``int``, ``float``, ``bool``,
``str``, ``Path``, ``Optional[...]``/unions of those, ``Literal[...]`` choices, ``tuple[...]`` /
``list[...]`` of scalars or ``dict[str, scalar]``.  Annotations are resolved with
``typing.get_type_hints``, so schemas may use ``from __future__ import annotations``.

This module says where values come from; convert.py turns a plain dict into the typed tree and
validates each value.

Resolution order (later wins): dataclass defaults -> preset chain (``base:`` first) -> overrides.

Validation (all raise :class:`ConfigError`, a ``ValueError``, naming the full dotted key):
unknown keys (with a difflib suggestion), wrong types, ``Literal`` choices, field metadata
``{"min": .., "max": ..}`` ranges, and each node's optional ``validate(self)`` method.
"""
from __future__ import annotations

import dataclasses
import os
import re
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

from tristream.config.convert import (  # noqa: E402
    ConfigError,
    _build,
    _convert,
    _dataclass_of,
    _describe_value,
    _field_default,
    _fields,
    _is_dataclass_type,
    _join,
    _to_plain,
    _type_str,
    _unknown_key_error,
    to_dict,
)

__all__ = [
    "ConfigError",
    "load_config",
    "load_preset_dict",
    "apply_overrides",
    "config_from_dict",
    "to_dict",
    "save_config",
    "describe",
    "key_docs",
    "KeyDoc",
    "parse_value",
    "DEFAULT_PRESETS_DIR",
]

T = TypeVar("T")

DEFAULT_PRESETS_DIR = Path(__file__).resolve().parent / "presets"

_MISSING = dataclasses.MISSING


# --------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader whose float resolver also accepts ``3e-4`` / ``1e5`` (YAML 1.2 style).

    PyYAML's YAML 1.1 resolver needs a dot in the mantissa, so plain ``3e-4`` would load as a str.
    """


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass


def parse_value(text: str) -> Any:
    """Parse an override value the way YAML would (``3e-4`` -> float, ``true`` -> bool, ``[1,2]``)."""
    return _yaml_load(text)


# --------------------------------------------------------------------------- errors for unknown keys


# --------------------------------------------------------------------------- plain dicts


def _defaults_dict(cls: type) -> dict[str, Any]:
    """Plain dict of the class defaults; required fields are absent (nested sections recurse)."""
    out: dict[str, Any] = {}
    for name, (f, tp) in _fields(cls).items():
        d = _field_default(f)
        if d is not _MISSING:
            out[name] = _to_plain(d)
        elif _is_dataclass_type(tp):
            out[name] = _defaults_dict(tp)
    return out


def _merge(cls: type, base: dict[str, Any], upd: Any, path: str, root: type, source: str = "") -> dict[str, Any]:
    """Type-aware deep merge of ``upd`` into a copy of ``base`` (sections merge, leaves replace)."""
    if not isinstance(upd, Mapping):
        raise ConfigError(
            f"{path or 'config'}{' in ' + source if source else ''}: expected a mapping of keys, "
            f"got {_describe_value(upd)}"
        )
    out = dict(base)
    fields = _fields(cls)
    for k, v in upd.items():
        if not isinstance(k, str) or k not in fields:
            raise _unknown_key_error(cls, path, str(k), root, source)
        dc = _dataclass_of(fields[k][1])
        if dc is not None and isinstance(v, Mapping):
            cur = out.get(k)
            if not isinstance(cur, Mapping):
                cur = _defaults_dict(dc)
            out[k] = _merge(dc, cur, v, _join(path, k), root, source)
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------- presets


def _preset_path(preset: str | Path, presets_dir: Path | None, rel_to: Path | None) -> Path:
    p = Path(preset)
    s = str(preset)
    looks_like_path = isinstance(preset, Path) or os.sep in s or "/" in s or s.endswith((".yaml", ".yml"))
    if looks_like_path:
        if not p.is_absolute() and rel_to is not None and not p.exists():
            cand = rel_to / p
            if cand.exists():
                return cand
        return p
    d = presets_dir if presets_dir is not None else (rel_to if rel_to is not None else DEFAULT_PRESETS_DIR)
    for ext in (".yaml", ".yml"):
        cand = Path(d) / f"{s}{ext}"
        if cand.exists():
            return cand
    return Path(d) / f"{s}.yaml"


def _available_presets(d: Path | None) -> list[str]:
    if d is None or not Path(d).is_dir():
        return []
    return sorted(p.stem for p in Path(d).iterdir() if p.suffix in (".yaml", ".yml"))


def load_preset_dict(
    preset: str | Path, presets_dir: Path | None = None, _chain: tuple[Path, ...] = (), _rel: Path | None = None
) -> list[tuple[Path, dict[str, Any]]]:
    """Resolve a preset and its ``base:`` chain to ``[(path, raw dict), ...]``, most basic first."""
    path = _preset_path(preset, presets_dir, _rel)
    if not path.is_file():
        search_dir = presets_dir if presets_dir is not None else (path.parent if path.parent.is_dir() else DEFAULT_PRESETS_DIR)
        avail = _available_presets(search_dir)
        listing = ", ".join(avail) if avail else "(none)"
        raise ConfigError(f"preset file not found: {path}; available presets in {search_dir}: {listing}")
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise ConfigError(f"preset inheritance cycle: {cycle}")
    try:
        raw = _yaml_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse preset {path}: {e}") from e
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"preset {path}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = dict(raw)
    bases = raw.pop("base", None)
    out: list[tuple[Path, dict[str, Any]]] = []
    if bases is not None:
        if isinstance(bases, (str, Path)):
            bases = [bases]
        if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
            raise ConfigError(f"preset {path}: 'base' must be a preset name or a list of names, got {bases!r}")
        for b in bases:
            out.extend(load_preset_dict(b, presets_dir, (*_chain, resolved), path.parent))
    out.append((path, raw))
    return out


# --------------------------------------------------------------------------- overrides


_KEY_RE = re.compile(r"^[A-Za-z_][\w\-]*(\.[\w\-]+)*$")


def _split_override(item: str) -> tuple[list[str], str]:
    s = item.strip()
    if s.startswith("--"):
        s = s[2:]
    key, eq, raw = s.partition("=")
    key = key.strip()
    if not eq or not key or not _KEY_RE.match(key):
        raise ConfigError(
            f"malformed override {item!r}: expected the form key.sub=value (e.g. algo.lr=3e-4)"
        )
    return key.split("."), raw


def _leaf_value(raw: str, tp: Any, key: str) -> Any:
    """YAML-parse an override value; for str-like targets fall back to the raw text."""
    try:
        parsed = parse_value(raw)
        perr: Exception | None = None
    except yaml.YAMLError as e:
        parsed, perr = raw, e
    if _dataclass_of(tp) is not None and (parsed is None or isinstance(parsed, Mapping)):
        return parsed
    try:
        _convert(parsed, tp, key)
        return parsed
    except ConfigError as e:
        try:
            _convert(raw, tp, key)
            return raw
        except ConfigError:
            pass
        if perr is not None:
            raise ConfigError(f"{key}: cannot parse value {raw!r}: {perr}") from perr
        raise e


def apply_overrides(cls: type, data: dict[str, Any], overrides: Sequence[str], root: type | None = None) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a plain config dict of ``cls`` (returns a new dict)."""
    root = root or cls
    out = dict(data)
    if isinstance(overrides, str):
        overrides = [overrides]
    for item in overrides:
        parts, raw = _split_override(item)
        node_cls: type = cls
        node = out
        path = ""
        for i, name in enumerate(parts):
            fields = _fields(node_cls)
            if name not in fields:
                raise _unknown_key_error(node_cls, path, name, root, f"override {item!r}")
            tp = fields[name][1]
            key = _join(path, name)
            last = i == len(parts) - 1
            if last:
                value = _leaf_value(raw, tp, key)
                dc = _dataclass_of(tp)
                if dc is not None and isinstance(value, Mapping):
                    cur = node.get(name)
                    node[name] = _merge(dc, cur if isinstance(cur, Mapping) else _defaults_dict(dc), value, key, root)
                else:
                    node[name] = value
                break
            dc = _dataclass_of(tp)
            if dc is not None:
                cur = node.get(name)
                child = dict(cur) if isinstance(cur, Mapping) else _defaults_dict(dc)
                node[name] = child
                node, node_cls, path = child, dc, key
                continue
            origin = typing.get_origin(tp)
            is_dict = origin is dict or tp is dict
            if is_dict and i == len(parts) - 2:
                args = typing.get_args(tp)
                vt = args[1] if args else Any
                sub = parts[-1]
                value = _leaf_value(raw, vt, f"{key}.{sub}")
                cur = node.get(name)
                d = dict(cur) if isinstance(cur, Mapping) else {}
                d[sub] = value
                node[name] = d
                break
            raise ConfigError(
                f"malformed override {item!r}: '{key}' is a value of type {_type_str(tp)}, not a section; "
                f"expected the form key.sub=value"
            )
    return out


# --------------------------------------------------------------------------- public API


def config_from_dict(cls: type[T], d: Mapping[str, Any] | None) -> T:
    """Build a typed, validated instance from a plain dict (missing keys take the class defaults)."""
    if not _is_dataclass_type(cls):
        raise TypeError(f"config_from_dict expects a dataclass type, got {cls!r}")
    merged = _merge(cls, _defaults_dict(cls), d or {}, "", cls)
    return _build(cls, merged, "")


def load_config(
    cls: type[T],
    preset: str | Path | None = None,
    overrides: Sequence[str] = (),
    presets_dir: Path | None = None,
) -> T:
    """Defaults <- YAML preset (with ``base:`` inheritance) <- ``a.b.c=value`` overrides."""
    if not _is_dataclass_type(cls):
        raise TypeError(f"load_config expects a dataclass type, got {cls!r}")
    data = _defaults_dict(cls)
    if preset is not None:
        for path, raw in load_preset_dict(preset, Path(presets_dir) if presets_dir is not None else None):
            data = _merge(cls, data, raw, "", cls, source=f"preset {path}")
    data = apply_overrides(cls, data, overrides, cls)
    return _build(cls, data, "")


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically); reload it with ``config_from_dict``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        yaml.safe_dump(to_dict(cfg), fh, sort_keys=False, default_flow_style=False)
    os.replace(tmp, path)
    return path


class KeyDoc(typing.NamedTuple):
    """One leaf of a config tree as the docs show it (``tristream config keys`` and ``config reference``)."""
    key: str  # dotted key, e.g. ``algo.lr``
    type: Any  # the resolved annotation (``_type_str`` writes it out)
    default: Any  # plain value; ``dataclasses.MISSING`` if required
    help: str
    limits: Mapping[str, Any]  # the field's ``min`` / ``max`` metadata, if any


def key_docs(cls: type) -> list[KeyDoc]:
    """Every leaf of ``cls`` in declaration order: the one walk both key listings are generated from."""
    out: list[KeyDoc] = []

    def leaf(key: str, f: dataclasses.Field, tp: Any, default: Any) -> KeyDoc:
        meta = f.metadata or {}
        limits = {k: meta[k] for k in ("min", "max") if k in meta}
        return KeyDoc(key, tp, default, str(meta.get("help", "")), limits)

    def walk(c: type, defaults: Mapping[str, Any], path: str, depth: int) -> None:
        for name, (f, tp) in _fields(c).items():
            key = _join(path, name)
            default = defaults.get(name, _MISSING)
            dc = _dataclass_of(tp)
            if dc is not None and depth < 20:
                if dc is not tp:  # Optional[Section]: the section itself is a leaf too
                    out.append(leaf(key, f, tp, default))
                sub = default if isinstance(default, Mapping) else _defaults_dict(dc)
                walk(dc, sub, key, depth + 1)
            else:
                out.append(leaf(key, f, tp, default))

    walk(cls, _defaults_dict(cls), "", 0)
    return out


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """``(dotted key, type, default, help)`` for every leaf; ``default`` is ``dataclasses.MISSING`` if required."""
    return [(k.key, _type_str(k.type), k.default, k.help) for k in key_docs(cls)]
