"""Typed-config machinery: nested dataclasses <- defaults + YAML presets + dotted overrides.

Works for any tree of nested ``@dataclass`` classes whose leaves are ``int``, ``float``, ``bool``,
``str``, ``Path``, ``Optional[...]``/unions of those, ``Literal[...]`` choices, ``tuple[...]`` /
``list[...]`` of scalars or ``dict[str, scalar]``.  Annotations are resolved with
``typing.get_type_hints``, so schemas may use ``from __future__ import annotations``.

Resolution order (later wins): dataclass defaults -> preset chain (``base:`` first) -> overrides.

Validation (all raise :class:`ConfigError`, a ``ValueError``, naming the full dotted key):
unknown keys (with a difflib suggestion), wrong types, ``Literal`` choices, field metadata
``{"min": .., "max": ..}`` ranges, and each node's optional ``validate(self)`` method.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, TypeVar, Union

import yaml

__all__ = [
    "ConfigError",
    "load_config",
    "load_preset_dict",
    "apply_overrides",
    "config_from_dict",
    "to_dict",
    "save_config",
    "describe",
    "parse_value",
    "DEFAULT_PRESETS_DIR",
]

T = TypeVar("T")

DEFAULT_PRESETS_DIR = Path(__file__).resolve().parent / "presets"

_MISSING = dataclasses.MISSING


class ConfigError(ValueError):
    """A config could not be loaded or failed validation; the message names the dotted key."""


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


# --------------------------------------------------------------------------- type helpers


_NoneType = type(None)


def _is_union(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin is Union or origin is types.UnionType


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass in ``tp`` if ``tp`` is a dataclass or ``Optional[dataclass]``."""
    if _is_dataclass_type(tp):
        return tp
    if _is_union(tp):
        dcs = [a for a in typing.get_args(tp) if _is_dataclass_type(a)]
        if len(dcs) == 1:
            return dcs[0]
    return None


_HINTS_CACHE: dict[type, dict[str, tuple[dataclasses.Field, Any]]] = {}


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """name -> (Field, resolved type) for the init fields of a dataclass."""
    cached = _HINTS_CACHE.get(cls)
    if cached is not None:
        return cached
    try:
        hints = typing.get_type_hints(cls)
    except Exception as e:  # NameError for an unresolvable forward reference
        raise ConfigError(f"cannot resolve the type annotations of {cls.__qualname__}: {e}") from e
    out = {f.name: (f, hints.get(f.name, Any)) for f in dataclasses.fields(cls) if f.init}
    _HINTS_CACHE[cls] = out
    return out


def _type_str(tp: Any) -> str:
    if tp is Any:
        return "any"
    if tp is _NoneType or tp is None:
        return "None"
    if _is_union(tp):
        return " | ".join(_type_str(a) for a in typing.get_args(tp))
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list, dict):
        args = typing.get_args(tp)
        if not args:
            return origin.__name__
        parts = ["..." if a is Ellipsis else _type_str(a) for a in args]
        return f"{origin.__name__}[{', '.join(parts)}]"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe_value(v: Any) -> str:
    return f"{v!r} ({type(v).__name__})"


def _type_error(path: str, tp: Any, value: Any) -> ConfigError:
    if typing.get_origin(tp) is Literal:
        allowed = ", ".join(repr(a) for a in typing.get_args(tp))
        return ConfigError(f"{path}: invalid choice {_describe_value(value)}; allowed values: {allowed}")
    return ConfigError(f"{path}: expected {_type_str(tp)}, got {_describe_value(value)}")


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against ``tp`` and return it in its typed form (lists -> tuples etc.)."""
    if tp is Any or tp is object:
        return value
    if tp is _NoneType or tp is None:
        if value is None:
            return None
        raise _type_error(path, tp, value)
    dc = _dataclass_of(tp) if not _is_union(tp) else None
    if dc is not None:
        if isinstance(value, dc):
            value = to_dict(value)
        return _build(dc, value, path)
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None:
            if _NoneType in args:
                return None
            raise _type_error(path, tp, value)
        non_none = [a for a in args if a is not _NoneType]
        errors: list[ConfigError] = []
        for a in non_none:
            try:
                return _convert(value, a, path)
            except ConfigError as e:
                errors.append(e)
        if len(non_none) == 1 and not str(errors[0]).startswith(f"{path}: expected "):
            raise errors[0]  # Optional[X]: X's nested error (a section, an item, a choice) is the useful one
        raise _type_error(path, tp, value)
    origin = typing.get_origin(tp)
    if origin is Literal:
        for choice in typing.get_args(tp):
            if value == choice and type(value) is type(choice):
                return choice
        raise _type_error(path, tp, value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(path, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        raise _type_error(path, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(path, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(path, tp, value)
    if tp is Path or (isinstance(tp, type) and issubclass(tp, os.PathLike)):
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise _type_error(path, tp, value)
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _type_error(path, tp, value)
        args = typing.get_args(tp)
        if not args:
            items = list(value)
        elif origin is list or (len(args) == 2 and args[1] is Ellipsis):
            items = [_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
        else:  # fixed-length tuple
            if len(value) != len(args):
                raise ConfigError(
                    f"{path}: expected {_type_str(tp)} ({len(args)} items), got {len(value)} items: {list(value)!r}"
                )
            items = [_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _type_error(path, tp, value)
        args = typing.get_args(tp)
        kt, vt = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            k2 = _convert(k, kt, f"{path} key {k!r}")
            out[k2] = _convert(v, vt, f"{path}.{k}")
        return out
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _type_error(path, tp, value)
    raise ConfigError(f"{path}: unsupported config field type {tp!r}")


def _check_range(value: Any, meta: Mapping[str, Any], path: str) -> None:
    lo, hi = meta.get("min"), meta.get("max")
    if lo is None and hi is None:
        return
    vals: list[tuple[str, Any]]
    if isinstance(value, (list, tuple)):
        vals = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    else:
        vals = [(path, value)]
    for p, v in vals:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        bad = (lo is not None and v < lo) or (hi is not None and v > hi) or v != v  # v != v: NaN
        if bad:
            rng = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            raise ConfigError(f"{p}: value {v!r} is out of range; allowed range {rng}")


# --------------------------------------------------------------------------- errors for unknown keys


def _all_leaf_keys(cls: type, path: str = "", depth: int = 0) -> list[str]:
    out: list[str] = []
    if depth > 20:
        return out
    for name, (_, tp) in _fields(cls).items():
        key = _join(path, name)
        dc = _dataclass_of(tp)
        if dc is not None:
            out.append(key)
            out.extend(_all_leaf_keys(dc, key, depth + 1))
        else:
            out.append(key)
    return out


def _unknown_key_error(cls: type, path: str, name: str, root: type | None, source: str = "") -> ConfigError:
    full = _join(path, name)
    valid = sorted(_fields(cls))
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    suggestion = _join(path, close[0]) if close else None
    if suggestion is None and root is not None:
        # the name may exist elsewhere in the tree, e.g. `lr=` meant `algo.lr=`
        all_keys = _all_leaf_keys(root)
        same_leaf = [k for k in all_keys if k.rsplit(".", 1)[-1] == name]
        if same_leaf:
            suggestion = same_leaf[0]
        else:
            close = difflib.get_close_matches(full, all_keys, n=1, cutoff=0.75)
            suggestion = close[0] if close else None
    where = f" in {source}" if source else ""
    hint = f"; did you mean '{suggestion}'?" if suggestion else ";"
    under = f"valid keys under '{path}'" if path else "valid top-level keys"
    return ConfigError(f"unknown config key '{full}'{where}{hint} {under}: {', '.join(valid)}")


# --------------------------------------------------------------------------- plain dicts


def _to_plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return to_dict(v)
    if isinstance(v, (list, tuple)):
        return [_to_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {_to_plain(k): _to_plain(x) for k, x in v.items()}
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if hasattr(v, "item") and callable(v.item) and type(v).__module__ == "numpy":
        return v.item()
    return v


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-serialisable dict of a config instance (tuples become lists)."""
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"to_dict expects a dataclass instance, got {type(cfg).__name__}")
    return {f.name: _to_plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.init}


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return _MISSING


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


def _build(cls: type[T], data: Any, path: str) -> T:
    if not isinstance(data, Mapping):
        where = f"section '{path}'" if path else "config"
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {_describe_value(data)}")
    fields = _fields(cls)
    for k in data:
        if not isinstance(k, str) or k not in fields:
            raise _unknown_key_error(cls, path, str(k), None)
    kwargs: dict[str, Any] = {}
    for name, (f, tp) in fields.items():
        key = _join(path, name)
        if name in data:
            value = _convert(data[name], tp, key)
        else:
            d = _field_default(f)
            if d is _MISSING:
                dc = _dataclass_of(tp)
                if dc is not None and dc is tp:
                    value = _build(dc, {}, key)
                else:
                    raise ConfigError(f"missing required config key '{key}' ({_type_str(tp)})")
            else:
                value = d
        if f.metadata:
            _check_range(value, f.metadata, key)
        kwargs[name] = value
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path or cls.__name__}: {e}") from e
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}" if path else str(e)) from e
        except ValueError as e:
            raise ConfigError(f"{path}: {e}" if path else str(e)) from e
    return obj


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
        parents: list[tuple[dict, str]] = []
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


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """``(dotted key, type, default, help)`` for every leaf; ``default`` is ``dataclasses.MISSING`` if required."""
    out: list[tuple[str, str, Any, str]] = []

    def walk(c: type, defaults: Mapping[str, Any], path: str, depth: int) -> None:
        for name, (f, tp) in _fields(c).items():
            key = _join(path, name)
            helptext = str(f.metadata.get("help", "")) if f.metadata else ""
            default = defaults.get(name, _MISSING)
            dc = _dataclass_of(tp)
            if dc is not None and depth < 20:
                if dc is not tp:  # Optional[Section]: the section itself is a leaf too
                    out.append((key, _type_str(tp), default, helptext))
                sub = default if isinstance(default, Mapping) else _defaults_dict(dc)
                walk(dc, sub, key, depth + 1)
            else:
                out.append((key, _type_str(tp), default, helptext))

    walk(cls, _defaults_dict(cls), "", 0)
    return out
