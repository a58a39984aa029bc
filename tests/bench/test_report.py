"""tristream report: a result file as its table with its provenance, and the docs' report blocks rebuilt."""
from __future__ import annotations

import json

import pytest

from tristream import provenance as meta
from tristream.bench.report import load_result, render, report_command, rewrite
from tristream.cli import main


def _decode_result(tokens_per_s: float) -> dict:
    variant = {"median": tokens_per_s, "min": tokens_per_s - 5, "max": tokens_per_s + 5, "ratio_vs_fp32_plain": 1.0,
               "acceptance_length": None, "acceptance_rate": None, "main_forwards_per_token": 1.0,
               "mtp_forwards_per_token": 0.0, "ms_per_forward": 2.5, "batch_size": 1, "same_as_plain": True,
               "agreement_vs_fp32": 1.0, "exact_match": 1.0}
    return {"benchmark": "decode", "workload": {}, "variants": {"fp32 plain, batch 1": variant},
            "meta": {"command": "tristream bench decode --checkpoint runs/lm", "commit": "0123456789abcdef",
                     "machine": {"cpu": "Test CPU", "cores": 2}}}


def _write(path, result):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return path


def test_a_result_prints_as_its_table_under_its_command_file_commit_and_machine(tmp_path):
    path = _write(tmp_path / "decode.json", _decode_result(177))
    text = render(path)
    first, _, table = text.partition("\n\n")
    assert first == (f"`tristream bench decode --checkpoint runs/lm`; result file `{path}`; commit 0123456789ab; "
                     f"2 x Test CPU")
    assert "| fp32 plain | 1 | 177 (172-182) | 1.00 |" in table


def test_the_kind_comes_from_the_file_name_when_the_result_does_not_say(tmp_path):
    result = _decode_result(100)
    del result["benchmark"]
    assert load_result(_write(tmp_path / "decode.json", result))[0] == "decode"
    with pytest.raises(ValueError, match=r"other\.json: not a tristream benchmark result .*known: algos, chaos"):
        load_result(_write(tmp_path / "other.json", result))


def test_docs_blocks_are_rebuilt_from_their_files_and_a_missing_file_leaves_its_block(tmp_path, capsys):
    _write(tmp_path / "runs" / "decode.json", _decode_result(250))
    doc = tmp_path / "docs" / "page.md"
    doc.parent.mkdir()
    stale = "| fp32 plain | 177 (172-182) | old |"
    doc.write_text(f"# Page\n\nintro\n\n<!-- report runs/decode.json -->\n{stale}\n<!-- /report -->\n\nmiddle\n\n"
                   f"<!-- report runs/gone.json -->\nkept as it is\n<!-- /report -->\n\nend\n")
    new, used, missing = rewrite(doc.read_text(), root=tmp_path)
    assert used == ["runs/decode.json"] and missing == ["runs/gone.json"]
    assert stale not in new and "| fp32 plain | 1 | 250 (245-255) |" in new and "result file `runs/decode.json`" in new
    assert "intro" in new and "middle" in new and "kept as it is" in new and new.endswith("end\n")
    assert rewrite(new, root=tmp_path)[0] == new  # rebuilding again changes nothing
    report_command([], [str(tmp_path / "docs")], plots=False, root=tmp_path)
    out = capsys.readouterr().out
    assert "1 table(s) rebuilt" in out and "missing runs/gone.json" in out
    assert "| fp32 plain | 1 | 250 (245-255) |" in doc.read_text()


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="nothing.json not found"):
        load_result(tmp_path / "nothing.json")
    (tmp_path / "peers.json").write_text("{not json")
    with pytest.raises(ValueError, match="peers.json is not valid JSON"):
        load_result(tmp_path / "peers.json")
    with pytest.raises(ValueError, match="--docs .*nowhere: no such file or folder"):
        report_command([], [str(tmp_path / "nowhere")], plots=False)


def test_cli_prints_the_table_and_result_files_name_their_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(meta, "COMMAND", None)
    path = _write(tmp_path / "decode.json", _decode_result(90))
    assert main(["report", str(path)]) == 0
    assert "| fp32 plain | 1 | 90 (85-95) |" in capsys.readouterr().out
    assert meta.run_meta()["command"] == f"tristream report {path}"  # what a bench run now records
    assert main(["report"]) == 2
    assert "name result files" in capsys.readouterr().err


def test_result_files_name_the_commit_of_this_checkout():
    import subprocess
    from pathlib import Path
    root = Path(meta.__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert meta.run_meta()["commit"].split("+")[0] == head.stdout.strip()
