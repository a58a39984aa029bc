"""The Markdown reference of every config key (docs/reference/config.md), generated from the schema.

Hand-written key tables go stale the day a field is added; this one is rebuilt from the same walk as
``tristream config keys`` (:func:`tristream.config.loader.key_docs`), and a test fails when the committed
copy differs from what the code generates. The small Markdown helpers here also serve the CLI reference
(tristream/cli_reference.py).
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

from tristream.config.convert import _dataclass_of, _fields, _is_union, _type_str
from tristream.config.loader import KeyDoc, key_docs

COMMAND = "tristream config reference --out docs/reference"


def generated_line(source: str) -> str:
    """The first line of every generated page: where it comes from and the command that rebuilds it."""
    return f"*Generated from {source} by `{COMMAND}`: do not edit by hand, rerun the command.*"


# --------------------------------------------------------------------------- Markdown


def md_value(v: Any) -> str:
    """A default or limit as it is written on the command line or in YAML (``null``, ``true``, ``[a, b]``)."""
    if v is dataclasses.MISSING:
        return "required"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v if v else '""'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(md_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {md_value(x)}" for k, x in v.items()) + "}"
    return repr(v) if isinstance(v, float) else str(v)


def md_code(text: str) -> str:
    """A code span inside a table cell (GFM needs ``|`` escaped even there)."""
    return f"`{text}`".replace("|", "\\|") if text else ""


def md_text(text: str) -> str:
    """Prose inside a table cell: ``<dir>`` would render as an HTML tag, ``*`` as emphasis, ``|`` as a column."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*")


def md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- config keys


def _members(tp: Any) -> tuple:
    return typing.get_args(tp) if _is_union(tp) else (tp,)


def _value_type(tp: Any) -> str:
    """The type a value is written in: a ``Literal`` shows the types of its choices (they go to "allowed")."""
    names: list[str] = []
    for a in _members(tp):
        if typing.get_origin(a) is Literal:
            parts = [type(c).__name__ for c in typing.get_args(a)]
        else:
            parts = [_type_str(a)]
        names += [n for n in dict.fromkeys(parts) if n not in names]
    return " | ".join(names)


def _allowed(doc: KeyDoc) -> str:
    """Choices of a ``Literal`` (``null`` too when optional) and the ``min`` / ``max`` range, as a cell."""
    choices = [c for a in _members(doc.type) if typing.get_origin(a) is Literal for c in typing.get_args(a)]
    if choices and type(None) in _members(doc.type):
        choices.append(None)
    lo, hi = doc.limits.get("min"), doc.limits.get("max")
    if lo is not None and hi is not None:
        bound = f"[{md_value(lo)}, {md_value(hi)}]"
    elif lo is not None:
        bound = f">= {md_value(lo)}"
    elif hi is not None:
        bound = f"<= {md_value(hi)}"
    else:
        bound = ""
    return ", ".join(md_code(md_value(c)) for c in choices) or md_code(bound)


def _section_doc(cls: type | None) -> str:
    """A section's own docstring; dataclass() fills a missing one with the signature, which says nothing."""
    doc = (cls.__doc__ or "") if cls is not None else ""
    if not doc or doc.startswith(f"{cls.__name__}("):
        return ""
    return " ".join(doc.split())


def config_reference(cls: type) -> str:
    """docs/reference/config.md: one table per top-level section (key, type, default, allowed, help)."""
    sections: dict[str, list[KeyDoc]] = {}
    for doc in key_docs(cls):
        head, dot, _ = doc.key.partition(".")
        sections.setdefault(head if dot else "(top level)", []).append(doc)
    fields = _fields(cls)
    out = [
        generated_line("the config schema (tristream/config/schema.py)"), "",
        "# Config reference", "",
        "Every config key, by section. Set a key on any command line as `key=value` (`tristream train "
        "algo.lr=1e-4`) or in a preset; [configuration.md](../configuration.md) explains presets, overrides and "
        "validation. Defaults are the schema's own: a preset (`default` unless `--preset` names another) "
        "changes some of them, and `tristream config show` prints the resolved values. Allowed: the choices, or "
        "the range checked on load (cross-field rules are checked too, and name the keys involved).", "",
        "Sections: " + " · ".join(f"[`{name}`](#{name})" for name in sections), "",
    ]
    for name, docs in sections.items():
        out += [f"## `{name}`", ""]
        intro = _section_doc(_dataclass_of(fields[name][1]) if name in fields else None)
        if intro:
            out += [md_text(intro), ""]
        rows = [(md_code(d.key), md_code(_value_type(d.type)), md_code(md_value(d.default)), _allowed(d),
                 md_text(d.help)) for d in docs]
        out += [md_table(("key", "type", "default", "allowed", "help"), rows), ""]
    return "\n".join(out)


def write_docs(out_dir: str | Path, docs: Mapping[str, str]) -> list[Path]:
    """Write each ``{file name: text}`` into ``out_dir`` (created if missing); a bad path is a ValueError naming it."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: expected a folder (e.g. docs/reference)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, text in docs.items():
            (out / name).write_text(text)
            paths.append(out / name)
    except OSError as e:
        raise ValueError(f"--out {out}: cannot write the reference there: {e.strerror or e}") from e
    return paths
