"""certify report: loading results, what is shown, escaping, self-containment, the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from certify.cli import main
from certify.errors import UsageError
from certify.report import ReportOptions, build_report, load_results, make_report
from certify.report.build import image_shape_for
from certify.report.load import read_expected
from certify.report.render import m, render_html, render_markdown
from tests.report_fixtures import EVIL, image_check, suite_records, tabular_check, write_fixture_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_fixture_results(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def report_files(results: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    out = tmp_path_factory.mktemp("report") / "study"
    written = make_report(results, out, ReportOptions(title=f"study {EVIL}"))
    return written.html.read_text(), written.markdown.read_text(), written.assets


def test_rows_come_from_check_json_and_suite_jsonl(results: list[Path]) -> None:
    rows = load_results(results)
    assert len(rows) == 3 + len(suite_records())
    assert [r.status for r in rows[3:]] == [r["status"] for r in suite_records()]
    image, tabular, holds = rows[:3]
    assert image.label == EVIL and image.model_path is not None and image.shape == (1, 64)
    assert tabular.model_path is None  # acas.onnx is not there: no hash, no crash
    assert holds.margins == (0.5, 1.25, 2.0, 0.01, 0.3)
    assert {r.group for r in rows} == {"image", "tabular", "holds", "suite"}


def test_torn_last_line_of_a_running_suite_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in suite_records()) + '{"onnx": "a.on')
    assert len(load_results([path])) == len(suite_records())


@pytest.mark.parametrize("text", ["", "not json\nat all\n", '{"model": "m.onnx"}', '{"status": "maybe"}'])
def test_bad_results_are_usage_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UsageError):
        load_results([path])


def test_user_text_is_escaped_everywhere(report_files: tuple[str, str, Path]) -> None:
    html, md, _ = report_files
    assert "<script" not in html.lower()
    assert html.count(EVIL.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")) >= 3  # title, h1, table
    assert "<script" not in md.lower()
    assert "&lt;script&gt;" in md


def test_markdown_escape_keeps_tables_intact() -> None:
    cell = m("a | b\nc <d>")
    assert "|" not in cell.replace("\\|", "") and "\n" not in cell and "<" not in cell


def test_html_is_self_contained_and_images_are_png(report_files: tuple[str, str, Path]) -> None:
    html, _, _ = report_files
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html, re.I)
    assert "<link" not in html.lower() and "@import" not in html
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) >= 4  # time, cactus, margins, one counterexample image
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)


def test_markdown_links_pngs_that_exist(report_files: tuple[str, str, Path]) -> None:
    _, md, assets = report_files
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {"time_per_instance.png", "cactus.png", "margins.png"} <= {Path(p).name for p in links}
    for link in links:
        assert (assets.parent / link).read_bytes().startswith(PNG_MAGIC)


def test_summary_table_has_a_row_per_result(report_files: tuple[str, str, Path], results: list[Path]) -> None:
    html, md, _ = report_files
    n = len(load_results(results))
    table = re.search(r'<table id="summary">(.*?)</table>', html, re.S)
    assert table is not None and table.group(1).count("<tr>") == n + 1
    summary = md.split("## Summary", 1)[1].split("## Plots", 1)[0]
    assert sum(1 for line in summary.splitlines() if re.match(r"\| \d+ \| .*\| \*\*", line)) == n


def test_versions_list_the_model_hash(report_files: tuple[str, str, Path], results: list[Path]) -> None:
    html, md, _ = report_files
    digest = hashlib.sha256((results[0].parent / "model.onnx").read_bytes()).hexdigest()
    spec_digest = hashlib.sha256((results[0].parent / "spec.yaml").read_bytes()).hexdigest()
    for text in (html, md):
        assert digest in text and spec_digest in text and "(file not found)" in text


def test_image_and_tabular_counterexamples(results: list[Path]) -> None:
    report = build_report(load_results(results))
    image, tabular = report.views[0], report.views[1]
    assert image.kind == "image" and image.figure is not None and image.figure.png.startswith(PNG_MAGIC)
    assert "original" in image.figure.alt and "difference" in image.figure.alt
    assert tabular.kind == "table" and len(tabular.input_table) == 5 and len(tabular.output_table) == 5
    assert [row[1] for row in tabular.input_table] == ["0.6", "-0.5", "0.1", "0.45", "-0.45"]
    suite_violated = next(k for k, r in enumerate(report.rows) if r.group == "suite" and r.status == "violated")
    assert report.views[suite_violated].kind == "table"


def test_image_shape_from_hint_option_or_square(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(image_check("m.onnx", "s.yaml", "n", side=16, nested=True)))
    (tmp_path / "b.json").write_text(json.dumps(tabular_check("m.onnx", "s.yaml")))
    nested, tab = load_results([tmp_path / "a.json", tmp_path / "b.json"])
    assert nested.shape == (1, 1, 16, 16)
    assert image_shape_for(nested, 256, ReportOptions()) == (16, 16)
    assert image_shape_for(tab, 5, ReportOptions()) is None
    assert image_shape_for(tab, 16, ReportOptions()) == (4, 4)  # a perfect square >= 16
    assert image_shape_for(tab, 9, ReportOptions()) is None
    assert image_shape_for(tab, 12, ReportOptions(image_shape=(3, 4))) == (3, 4)


def test_perturbation_panel_is_the_difference(results: list[Path]) -> None:
    row = load_results(results)[0]
    lifted = row.lifted
    assert lifted is not None
    x = np.asarray(lifted["input"]).reshape(-1)
    delta = np.asarray(lifted["perturbation"]).reshape(-1)
    assert np.allclose(x, row.counterexample.x) and np.max(np.abs(delta)) <= 0.1 + 1e-12


def test_expected_results_flag_mismatches(tmp_path: Path, results: list[Path]) -> None:
    csv = tmp_path / "expected.csv"
    csv.write_text("onnx,vnnlib,expected\nnet_0.onnx,prop_1.vnnlib,sat\nnet_1.onnx,prop_2.vnnlib,sat\n")
    expected = read_expected(csv)
    assert expected == {("net_0.onnx", "prop_1.vnnlib"): "violated", ("net_1.onnx", "prop_2.vnnlib"): "violated"}
    report = build_report(load_results(results), ReportOptions(expected=expected))
    flagged = [report.rows[k] for k in report.mismatches]
    assert [(r.model, r.status) for r in flagged] == [("net_0.onnx", "holds")]
    assert "MISMATCH" in render_html(report) and "MISMATCH" in render_markdown(report, "x")


def test_cli_writes_both_files(tmp_path: Path, results: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "rep.html"
    code = main(["report", *map(str, results), "-o", str(out), "--title", "T", "--image-shape", "8x8"])
    assert code == 0
    assert (tmp_path / "sub" / "rep.html").read_text().startswith("<!DOCTYPE html>")
    assert (tmp_path / "sub" / "rep.md").read_text().startswith("# T")
    assert "rep.html" in capsys.readouterr().out


@pytest.mark.parametrize("extra", [["--image-shape", "8by8"], ["--expected", "missing.csv"]])
def test_cli_bad_input_exits_2(tmp_path: Path, results: list[Path], extra: list[str]) -> None:
    assert main(["report", str(results[0]), "-o", str(tmp_path / "r"), *extra]) == 2


def test_cli_missing_results_exit_2(tmp_path: Path) -> None:
    assert main(["report", str(tmp_path / "nope.json"), "-o", str(tmp_path / "r")]) == 2
