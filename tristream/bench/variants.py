"""Named config variants of a benchmark: ``NAME[:KEY=VALUE]...`` lists, and a config with overrides applied."""
from __future__ import annotations

from tristream.config import Config
from tristream.config.convert import to_dict
from tristream.config.loader import apply_overrides, config_from_dict


def parse_named_overrides(text: str, option: str) -> dict[str, list[str]]:
    """``"NAME[:KEY=VALUE]...,..."`` -> {name: overrides}, e.g. ``fp32,int4:rollout.weights=int4``; ``option``
    names the command-line option in the error."""
    named: dict[str, list[str]] = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        name, *overrides = item.split(":")
        bad = [o for o in overrides if "=" not in o]
        if not name or bad or name in named:
            raise ValueError(f"{option}: {item!r} must be NAME[:KEY=VALUE]... with a new name "
                             f"(e.g. int4:rollout.weights=int4)")
        named[name] = overrides
    return named


def with_overrides(cfg, overrides: list[str]):
    """``cfg`` with dotted overrides applied, validated like a command line's."""
    return config_from_dict(Config, apply_overrides(Config, to_dict(cfg), overrides))
