"""``benchmarks/corpus.py``: a corpus in VNN-COMP's own layout (gzipped files, instances.csv
without header) run, scored and tabled, without writing anything beside the source files.

The corpus is built from the tiny nets of ``vnncomp2021/test``: benchmark ``alpha`` holds two
nets whose properties hold and one net with an op certify does not know; benchmark ``beta`` has
a violated instance and a holding one that ``expected.csv`` deliberately mislabels ``sat``, so
the table must count one wrong answer and the exit code must be 1.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from onnx import helper

from certify.suite import SuiteEntry
from tests.zoo import onnx_helper_model

ROOT = Path(__file__).resolve().parents[1]
TEST_BENCH = ROOT.parent / "shared" / "benchmarks" / "vnncomp2021" / "test"


def load_corpus() -> ModuleType:
    """``benchmarks/corpus.py`` as a module (registered, as its dataclasses need)."""
    name = "benchmarks_corpus"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def put_gz(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.gz").write_bytes(gzip.compress(data))


def build_corpus(src: Path) -> None:
    alpha, beta = src / "alpha", src / "beta"
    for name in ("test_nano", "test_tiny"):
        put_gz(alpha / "onnx", f"{name}.onnx", (TEST_BENCH / f"{name}.onnx").read_bytes())
        put_gz(alpha / "vnnlib", f"{name}.vnnlib", (TEST_BENCH / f"{name}.vnnlib").read_bytes())
    odd = onnx_helper_model([helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")],
                            {"x": [1, 1]}, {"y": [1, 1]})
    put_gz(alpha / "onnx", "odd.onnx", odd.SerializeToString())
    (alpha / "instances.csv").write_text("onnx/test_nano.onnx,vnnlib/test_nano.vnnlib,60\n"
                                         "onnx/test_tiny.onnx,vnnlib/test_tiny.vnnlib,60\n"
                                         "onnx/odd.onnx,vnnlib/test_nano.vnnlib,60\n")
    (alpha / "expected.csv").write_text("onnx,vnnlib,expected\n"
                                        "onnx/test_nano.onnx,vnnlib/test_nano.vnnlib,unsat\n"
                                        "onnx/test_tiny.onnx,vnnlib/test_tiny.vnnlib,unsat\n"
                                        "onnx/odd.onnx,vnnlib/test_nano.vnnlib,unknown\n")
    for name in ("test_sat", "test_unsat"):
        put_gz(beta / "onnx", f"{name}.onnx", (TEST_BENCH / f"{name}.onnx").read_bytes())
    put_gz(beta / "vnnlib", "test_prop.vnnlib", (TEST_BENCH / "test_prop.vnnlib").read_bytes())
    (beta / "instances.csv").write_text("onnx/test_sat.onnx,vnnlib/test_prop.vnnlib,60\n"
                                        "onnx/test_unsat.onnx,vnnlib/test_prop.vnnlib,60\n")
    (beta / "expected.csv").write_text("onnx,vnnlib,expected\n"
                                       "onnx/test_sat.onnx,vnnlib/test_prop.vnnlib,sat\n"
                                       "onnx/test_unsat.onnx,vnnlib/test_prop.vnnlib,sat\n")  # wrong on purpose
    (src / "anchors.csv").write_text("benchmark,tool,rows,sat,unsat,timeout\n"
                                     "alpha,slowtool,3,0,1,2\nalpha,goodtool,3,0,2,0\n"
                                     "beta,goodtool,2,1,1,0\n")


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def set_read_only(folder: Path, read_only: bool) -> None:
    for p in [folder, *folder.rglob("*")]:
        if p.is_dir():
            p.chmod(0o555 if read_only else 0o755)
        else:
            p.chmod(0o444 if read_only else 0o644)


def table_rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| benchmark"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_corpus_runs_scores_and_writes_only_under_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = load_corpus()
    src, out = tmp_path / "src", tmp_path / "out"
    build_corpus(src)
    before = snapshot(src)
    set_read_only(src, True)
    try:
        code = corpus.main([str(src), "--sample", "5", "--cap", "20", "--workers", "1", "--out", str(out)])
        printed, err = capsys.readouterr()
    finally:
        set_read_only(src, False)
    assert snapshot(src) == before  # nothing unpacked or written beside the source files
    assert code == 1  # the mislabelled instance is a wrong answer
    assert "CONTRADICT" in err and "test_unsat.onnx" in err

    summary = (out / "summary.md").read_text()
    assert summary in printed
    rows = table_rows(summary)
    # instances, nets loaded / used, holds, violated, unknown, errors, wrong, answered / known, time, overrun, best
    alpha, beta, total = rows["alpha"], rows["beta"], rows["**total**"]
    assert alpha[:8] == ["3 of 3", "2 / 3", "2", "0", "0", "1: 1 UnsupportedOp Frobnicate", "0", "2 / 2"]
    assert alpha[10] == "2 of 3 (goodtool)"
    assert beta[:8] == ["2 of 2", "2 / 2", "1", "1", "0", "0", "**1**", "2 / 2"]
    assert beta[10] == "2 of 2 (goodtool)"
    assert total[:8] == ["5 of 5", "4 / 5", "3", "1", "0", "1: 1 UnsupportedOp Frobnicate", "**1**", "4 / 4"]
    assert total[10] == "4 of 5 (per-benchmark best)"
    assert float(alpha[9]) < 0 and float(beta[9]) < 0  # tiny nets end long before their timeouts

    records = [json.loads(line) for name in ("alpha", "beta")
               for line in (out / f"{name}.results.jsonl").read_text().splitlines()]
    assert len(records) == 5
    assert all(r["timeout"] == 20 for r in records)  # min(60 s official, 20 s cap)
    assert all(r["wall_seconds"] >= r["seconds"] for r in records)

    # --resume runs nothing again and gives the same table
    finished = sorted(r["finished"] for r in records)
    code = corpus.main([str(src), "--sample", "5", "--cap", "20", "--out", str(out), "--resume"])
    capsys.readouterr()
    assert code == 1
    assert table_rows((out / "summary.md").read_text())["beta"][:8] == beta[:8]
    again = [json.loads(line) for name in ("alpha", "beta")
             for line in (out / f"{name}.results.jsonl").read_text().splitlines()]
    assert sorted(r["finished"] for r in again) == finished


def entry(k: int) -> SuiteEntry:
    return SuiteEntry(f"onnx/n{k}.onnx", f"vnnlib/p{k}.vnnlib", 60.0, k + 1, k, 0,
                      Path(f"n{k}.onnx"), Path(f"p{k}.vnnlib"))


def test_sample_is_deterministic_in_list_order_and_capped() -> None:
    corpus = load_corpus()
    entries = [entry(k) for k in range(50)]
    first = corpus.sample(entries, 7)
    assert first == corpus.sample(entries, 7)  # the same rows every time
    assert len(first) == 7 and [e.index for e in first] == sorted(e.index for e in first)
    assert [e.index for e in first] != list(range(7))  # shuffled, not the head of the list
    assert corpus.sample(entries, 7, seed=1) != first
    assert corpus.sample(entries, None) == entries and corpus.sample(entries, 80) == entries
    capped = corpus.cap_timeouts(entries[:2] + [SuiteEntry("a", "b", 5.0, 1, 0, 0, Path("a"), Path("b"))], 10.0)
    assert [e.timeout for e in capped] == [10.0, 10.0, 5.0]


def test_anchor_picks_the_tool_with_most_answers(tmp_path: Path) -> None:
    corpus = load_corpus()
    path = tmp_path / "anchors.csv"
    path.write_text("benchmark,tool,rows,sat,unsat,timeout\nb,x,10,3,3,4\nb,y,10,1,6,3\nc,x,5,0,0,5\n")
    best = corpus.read_anchors(path)
    assert best["b"] == corpus.Anchor("y", 7, 10)
    assert best["c"] == corpus.Anchor("x", 0, 5)


def test_error_reasons_group_by_kind() -> None:
    corpus = load_corpus()
    assert corpus.error_reason({"error_type": "UnsupportedOp", "op": "Sign", "reason": "..."}) == "UnsupportedOp Sign"
    assert corpus.error_reason({"error_type": "crash", "reason": "worker crashed"}) == "crash"
    assert corpus.error_reason({"reason": "cannot read ONNX model x.onnx: truncated"}) == "cannot read ONNX model"

