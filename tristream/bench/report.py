"""``tristream report``: a benchmark's result file (or a recipe's ``summary.json``) as the table (and figure) it
stands for, and the measured tables of the docs rebuilt from their result files.

Every ``tristream bench ...`` writes a JSON result (workload, medians and spreads, and under ``meta`` the
command, commit, machine and versions). A table in README.md or docs/ that came from one sits between two
markers naming that file:

    <!-- report runs/bench/peers_hopper/peers.json -->
    ... what `tristream report runs/bench/peers_hopper/peers.json` prints ...
    <!-- /report -->

``tristream report --docs README.md docs`` rewrites each such block from its file, so a published number is
always what its result file says; a block whose file is not on this machine is left as it is and named,
with the command that makes the file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tristream.provenance import read_json


@dataclass(frozen=True)
class Kind:
    """How one benchmark's result reads: ``table(result) -> str`` and ``plot(result, png) -> png`` (or None)."""
    table: Callable[[dict], str]
    plot: Callable[[dict, Path], Path] | None
    markdown: bool  # the table is Markdown (else it is shown as a text block)


def _kinds() -> dict[str, Kind]:
    # imported here: each benchmark module pulls in its own dependencies (matplotlib, the runtime)
    from tristream.bench import algos, chaos, decode, peers, plan_tables, throughput
    from tristream.workflow.recipe import format_summary
    return {"peers": Kind(peers.format_table, peers.plot_peers, True),
            "summary": Kind(format_summary, None, False),
            "chaos": Kind(chaos.format_report, chaos.plot_memory, True),
            "decode": Kind(decode.format_result, None, True),
            "algos": Kind(lambda r: algos.format_table(r["results"]), None, True),
            "throughput": Kind(throughput.format_result, None, False),
            "plan_predict": Kind(plan_tables.format_prediction, None, True)}


def load_result(path: str | Path) -> tuple[str, dict]:
    """(kind, result) of a result file; the kind is its ``benchmark`` field, else its file name
    (``peers.json``, ``throughput.json``, ...)."""
    path = Path(path)
    try:
        result = read_json(path, "result file", "a `tristream bench ...` run writes it")
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None
    kinds = _kinds()
    kind = result.get("benchmark") if isinstance(result, dict) else None
    kind = kind or path.stem
    if kind not in kinds:
        raise ValueError(f"{path}: not a tristream benchmark result (kind {kind!r}); known: "
                         f"{', '.join(sorted(kinds))} (the file names bench writes: peers.json, throughput.json, ...; a recipe's summary.json)")
    return kind, result


def provenance(path: str | Path, result: dict) -> str:
    """One line: the command, the result file, the commit and the machine (what a published table names)."""
    meta = result.get("meta") or result  # older files kept these at the top level
    parts = [f"result file `{path}`"]
    if meta.get("command"):
        parts.insert(0, f"`{meta['command']}`")
    if meta.get("commit"):
        commit = str(meta["commit"])
        parts.append(f"commit {commit[:12]}" + (" with uncommitted changes" if commit.endswith("+dirty") else ""))
    machine = meta.get("machine") or {}
    if machine.get("cpu"):
        parts.append(f"{machine.get('cores', '?')} x {machine['cpu']}")
    return "; ".join(parts)


def render(path: str | Path, cited_as: str | None = None) -> str:
    """The block a result file stands for: its provenance line (naming the file as ``cited_as``, default
    ``path``), then its table."""
    kind, result = load_result(path)
    k = _kinds()[kind]
    table = k.table(result)
    return f"{provenance(cited_as or path, result)}\n\n" + (table if k.markdown else f"```\n{table}\n```")


def replot(path: str | Path) -> Path | None:
    """Redraw a result's figure beside it (``peers.png`` beside ``peers.json``); None for kinds without one."""
    kind, result = load_result(path)
    plot = _kinds()[kind].plot
    return plot(result, Path(path).with_suffix(".png")) if plot else None


BLOCK = re.compile(r"(<!-- report (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- /report -->)", re.S)


def rewrite(text: str, root: Path = Path(".")) -> tuple[str, list[str], list[str]]:
    """``text`` with every report block rebuilt from its result file (paths relative to ``root``).
    Returns (new text, files used, files missing)."""
    used, missing = [], []

    def one(m: re.Match) -> str:
        path = m.group("path")
        if not (root / path).is_file():
            missing.append(path)
            return m.group(0)
        used.append(path)
        return f"{m.group(1)}{render(root / path, cited_as=path)}\n{m.group(4)}"

    return BLOCK.sub(one, text), used, missing


def markdown_files(targets: list[str]) -> list[Path]:
    files: list[Path] = []
    for t in targets:
        p = Path(t)
        if p.is_dir():
            files += sorted(p.rglob("*.md"))
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"--docs {t}: no such file or folder")
    return files


def report_command(results: list[str], docs: list[str] | None, plots: bool, root: Path = Path(".")) -> int:
    """Print each result file's block (and redraw its figure with ``plots``); with ``docs``, rebuild the report
    blocks of those Markdown files and folders in place."""
    if not results and not docs:
        raise ValueError("name result files (tristream report runs/bench/peers.json) and/or --docs README.md docs")
    for path in results:
        print(render(path) + "\n")
        if plots and (png := replot(path)) is not None:
            print(f"wrote {png}")
    missing_all: dict[str, list[Path]] = {}
    for md in markdown_files(docs or []):
        text = md.read_text()
        new, used, missing = rewrite(text, root)
        for m in missing:
            missing_all.setdefault(m, []).append(md)
        if new != text:
            md.write_text(new)
        if used:
            print(f"{md}: {len(used)} table(s) rebuilt" + (" (unchanged)" if new == text else ""))
    for path, pages in missing_all.items():
        print(f"missing {path} (cited in {', '.join(map(str, pages))}): the command above its table in the page "
              f"makes it; that table was left as it is")
    return 0
