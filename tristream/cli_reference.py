"""``tristream config reference``: the Markdown references of the config keys and of the command line.

docs/reference/cli.md is generated from the argparse parser itself (every subcommand, its options, their
defaults and help), so it cannot drift from ``tristream --help``. It is built from the parser's actions,
not from argparse's formatted help, whose wrapping depends on the terminal width and the Python version:
the same code gives the same page everywhere, which lets a test compare the committed copy with it.
"""
from __future__ import annotations

import argparse
from collections import Counter
from typing import Sequence

from tristream.config.reference import (COMMAND, config_reference, generated_line, md_code, md_table, md_text,
                                        md_value, write_docs)


def _expand(text: str | None, action: argparse.Action | None = None, prog: str = "") -> str:
    """Help text as argparse prints it: ``%(default)s`` and friends filled in, ``%%`` -> ``%``."""
    text = text or ""
    if action is None:  # descriptions and epilogs: argparse fills in only %(prog)s
        return text % {"prog": prog} if "%(prog)" in text else text
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = prog
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    return text % params if "%" in text else text


def _invocation(a: argparse.Action, synopsis: bool = False) -> str:
    """``--out OUT``, ``--data DATA [DATA ...]``, ``--no-progress``, or a positional's name (in a synopsis, a
    positional with choices is written ``{a,b}`` as argparse's usage does)."""
    if a.nargs == 0:
        return ", ".join(a.option_strings)
    name = a.metavar or (a.dest if not a.option_strings else a.dest.upper())
    if synopsis and a.choices is not None and not a.option_strings and a.metavar is None:
        name = "{" + ",".join(map(str, a.choices)) + "}"
    args = {None: name, "?": f"[{name}]", "*": f"[{name} ...]", "+": f"{name} [{name} ...]"}.get(a.nargs, name)
    if isinstance(a.nargs, int):
        args = " ".join([name] * a.nargs)
    return " ".join([", ".join(a.option_strings), args]).strip()


def _values(a: argparse.Action) -> str:
    if a.choices is not None:
        return ", ".join(md_code(str(c)) for c in a.choices)
    if a.nargs == 0:
        return "flag"
    return md_code(getattr(a.type, "__name__", "")) if a.type is not None else "text"


def _default(a: argparse.Action) -> str:
    if a.required or (not a.option_strings and a.nargs not in ("?", "*")):
        return "required"
    if a.nargs == 0 or a.default is None or a.default is argparse.SUPPRESS:
        return ""
    return md_code(md_value(a.default))


def _subcommands(parser: argparse.ArgumentParser) -> tuple[dict[str, argparse.ArgumentParser], dict[str, str]]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: _expand(a.help, a, parser.prog) for a in sub._choices_actions}
    return dict(sub.choices), helps


def _command(p: argparse.ArgumentParser, summary: str, shared_epilog: str | None) -> list[str]:
    actions = [a for a in p._actions if not isinstance(a, argparse._HelpAction)]
    positionals = " ".join(_invocation(a, synopsis=True) for a in actions if not a.option_strings)
    options = "[options]" if any(a.option_strings for a in actions) else ""
    overrides = "[key.sub=value ...]" if "--preset" in p._option_string_actions else ""
    synopsis = " ".join(x for x in (p.prog, positionals, options, overrides) if x)
    out = [f"## `{p.prog}`", "", md_text(summary), ""]
    if p.description:
        out += [md_text(_expand(p.description, prog=p.prog)), ""]
    out += [f"`{synopsis}`", ""]
    rows = [(md_code(_invocation(a)), _values(a), _default(a), md_text(_expand(a.help, a, p.prog))) for a in actions]
    out += [md_table(("argument", "values", "default", "help"), rows), ""]
    if p.epilog and p.epilog != shared_epilog:
        out += [md_text(_expand(p.epilog, prog=p.prog)), ""]
    return out


def cli_reference(parser: argparse.ArgumentParser) -> str:
    """docs/reference/cli.md: every subcommand with its options (argument, values, default, help)."""
    commands, helps = _subcommands(parser)
    epilogs = Counter(p.epilog for p in commands.values() if p.epilog)
    shared = epilogs.most_common(1)[0][0] if epilogs else None
    index = [(f"[`{p.prog}`](#{p.prog.replace(' ', '-')})", md_text(helps.get(n, ""))) for n, p in commands.items()]
    out = [
        generated_line("the argument parser (tristream/cli.py)"), "",
        "# CLI reference", "",
        md_text(" ".join(_expand(parser.description, prog=parser.prog).split())), "",
        md_table(("command", "what it does"), index), "",
        "Every command also takes `-h` / `--help`. Commands with `--preset` load a config and take config overrides "
        "`key.sub=value` anywhere among their arguments (every key: [config.md](config.md)).", "",
    ]
    if shared:
        out += ["Shared by the commands that load a config:", "", md_text(_expand(shared, prog=parser.prog)), ""]
    for name, p in commands.items():
        out += _command(p, helps.get(name, ""), shared)
    return "\n".join(out)


def reference_docs() -> dict[str, str]:
    """``{file name: text}`` of both references, as ``tristream config reference --out DIR`` writes them."""
    from tristream.cli import build_parser
    from tristream.config import Config

    return {"config.md": config_reference(Config), "cli.md": cli_reference(build_parser())}


def reference_command(overrides: Sequence[str], out: str | None, cli: bool) -> int:
    """Print the config reference (``--cli``: the CLI reference), or write both into ``out``."""
    if overrides:
        raise ValueError(f"config reference documents the schema's defaults and takes no overrides (got "
                         f"{' '.join(overrides)}); `tristream config show KEY=VALUE` prints a resolved config")
    if out is not None and cli:
        raise ValueError("config reference: --out writes both config.md and cli.md; --cli prints the CLI "
                         "reference instead of writing files; use one of them")
    docs = reference_docs()
    if out is None:
        print(docs["cli.md" if cli else "config.md"], end="")
        return 0
    for path in write_docs(out, docs):
        print(f"[tristream] wrote {path}")
    print(f"[tristream] regenerate after changing the schema or the CLI: {COMMAND}")
    return 0
