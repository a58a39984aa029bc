"""Typed values of a config tree: the type helpers and the conversion + range checks of one value.

``_convert(value, annotation, dotted_path)`` turns a parsed YAML / override value into the annotated type
(scalars, ``Optional``/unions, ``Literal`` choices, ``list``/``tuple``/``dict`` of those, nested
dataclasses as dicts) or raises :class:`ConfigError` naming the key; ``_check_range`` applies a field's
``min``/``max`` metadata. loader.py builds whole trees from them.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, Union


T = TypeVar("T")
_MISSING = dataclasses.MISSING


class ConfigError(ValueError):
    """A config could not be loaded or failed validation; the message names the dotted key."""


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


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return _MISSING
