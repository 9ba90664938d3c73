"""The CLI's contract: verdict exit codes, JSON output, and one clear line (exit 2) on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from certify.cli import main
from tests.zoo import dense, export, onnx_helper_model, save

ROOT = Path(__file__).resolve().parents[1]
TEST_BENCH = ROOT.parent / "shared" / "benchmarks" / "vnncomp2021" / "test"
QUICK = ROOT / "case_studies" / "quickstart"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("certify: error:"), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture()
def small_model(tmp_path: Path) -> Path:
    return export(dense(0, [3, 8, 2]), (3,), tmp_path / "small.onnx")


def box_vnnlib(path: Path, n_in: int, lo: float, hi: float, out_rows: str) -> Path:
    decl = "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in))
    decl += "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
    bounds = "".join(f"(assert (>= X_{i} {lo}))\n(assert (<= X_{i} {hi}))\n" for i in range(n_in))
    path.write_text(decl + bounds + out_rows)
    return path


def test_holds_violated_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = TEST_BENCH / "test_tiny.vnnlib"
    code, out, _ = run(capsys, "check", str(TEST_BENCH / "test_tiny.onnx"), str(spec), "--engine", "crown",
                       "--json", str(tmp_path / "r.json"))
    assert code == 0 and out.startswith("HOLDS")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["status"] == "holds" and data["engine"] == "crown" and data["counterexample"] is None
    assert {"seconds", "reason", "model", "spec"} <= set(data)

    code, out, _ = run(capsys, "check", str(TEST_BENCH / "test_sat.onnx"), str(TEST_BENCH / "test_prop.vnnlib"),
                       "--engine", "fuzz", "--timeout", "20", "--json", "-")
    assert code == 1
    data = json.loads(out)
    assert data["status"] == "violated" and data["counterexample"]["replayed"] is True
    assert len(data["counterexample"]["x"]) == 5 and len(data["counterexample"]["y"]) == 5


def test_unknown_exit_code_and_reason(small_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # y0 - y1 >= -1000 is true somewhere, but IBP cannot rule out y0 <= y1 + 1000 everywhere: unknown
    spec = box_vnnlib(tmp_path / "p.vnnlib", 3, -1, 1, "(assert (<= Y_0 (+ Y_1 1000)))\n")
    code, out, _ = run(capsys, "check", str(small_model), str(spec), "--engine", "ibp")
    assert code == 3 and out.startswith("UNKNOWN") and "reason:" in out


def test_truncated_onnx(small_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = small_model.read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    spec = box_vnnlib(tmp_path / "p.vnnlib", 3, -1, 1, "(assert (<= Y_0 Y_1))\n")
    code, _, err = run(capsys, "check", str(bad), str(spec))
    assert code == 2
    assert_one_line_error(err, "truncated.onnx")


def test_unsupported_op_runs_whole_and_never_proves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model certify cannot convert is run whole in onnxruntime: a counterexample is found and
    replayed, a property that holds stays UNKNOWN with the op and node named."""
    model = onnx_helper_model([helper.make_node("Erf", ["x"], ["y"], name="the_erf")], {"x": [1, 2]},
                              {"y": [1, 2]})
    path = save(model, tmp_path / "erf.onnx")
    violated = box_vnnlib(tmp_path / "v.vnnlib", 2, -1, 1, "(assert (<= Y_0 Y_1))\n")
    code, out, err = run(capsys, "check", str(path), str(violated), "--timeout", "10")
    assert code == 1 and out.startswith("VIOLATED  (sample") and "replayed in onnxruntime: yes" in out
    holds = box_vnnlib(tmp_path / "h.vnnlib", 2, -1, 1, "(assert (>= Y_0 1.5))\n")  # erf < 1
    code, out, err = run(capsys, "check", str(path), str(holds), "--timeout", "3")
    assert code == 3 and out.startswith("UNKNOWN") and "'Erf' at node 'the_erf'" in out
    assert "Traceback" not in err
    code, out, _ = run(capsys, "engines", "--ops", str(path))
    assert code == 0 and "not converted (unsupported ONNX op 'Erf' at node 'the_erf'" in out
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert "missing opaque" in rows["crown"] and "all" in rows["sample"].split()


def test_op_neither_certify_nor_onnxruntime_runs_is_an_error(tmp_path: Path, capsys) -> None:
    model = onnx_helper_model([helper.make_node("Frobnicate", ["x"], ["y"], name="odd", domain="com.example")],
                              {"x": [1, 2]}, {"y": [1, 2]})
    path = save(model, tmp_path / "odd.onnx")
    spec = box_vnnlib(tmp_path / "p.vnnlib", 2, -1, 1, "(assert (<= Y_0 Y_1))\n")
    code, _, err = run(capsys, "check", str(path), str(spec))
    assert code == 2
    assert_one_line_error(err, "Frobnicate", "odd")


def test_vnnlib_syntax_error(small_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = box_vnnlib(tmp_path / "p.vnnlib", 3, -1, 1, "(assert (<= Y_0 Y_1)))\n")
    code, _, err = run(capsys, "check", str(small_model), str(spec))
    assert code == 2
    assert_one_line_error(err, "p.vnnlib:", ")")


def test_yaml_wrong_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("kind: robustness\ninput: [0.0, 0.5, 1.0]\nepsilon: 0.1\n")
    code, _, err = run(capsys, "check", str(QUICK / "digits_mlp.onnx"), str(spec))
    assert code == 2
    assert_one_line_error(err, "s.yaml", "epsilon")


@pytest.mark.parametrize("kind", ["vnnlib", "yaml"])
def test_spec_size_mismatch(kind: str, small_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if kind == "vnnlib":
        spec = box_vnnlib(tmp_path / "p.vnnlib", 5, -1, 1, "(assert (<= Y_0 Y_1))\n")
    else:
        spec = tmp_path / "s.yaml"
        np.save(tmp_path / "x.npy", np.zeros(7))
        spec.write_text("kind: robustness\ninput: x.npy\neps: 0.1\nlabel: 0\n")
    code, _, err = run(capsys, "check", str(small_model), str(spec))
    assert code == 2
    assert_one_line_error(err, "5" if kind == "vnnlib" else "7", "3")


def test_unknown_engine_and_preset(small_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = box_vnnlib(tmp_path / "p.vnnlib", 3, -1, 1, "(assert (<= Y_0 Y_1))\n")
    code, _, err = run(capsys, "check", str(small_model), str(spec), "--engine", "nope")
    assert code == 2
    assert_one_line_error(err, "nope")
    code, _, err = run(capsys, "check", str(small_model), str(spec), "--solver", "nope")
    assert code == 2
    assert_one_line_error(err, "nope")


def test_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "check", str(tmp_path / "none.onnx"), str(tmp_path / "none.vnnlib"))
    assert code == 2
    assert_one_line_error(err, "none.onnx")


def test_engines_lists_every_engine(capsys: pytest.CaptureFixture[str]) -> None:
    from certify.engines.registry import ENGINES

    code, out, _ = run(capsys, "engines")
    assert code == 0
    for name in ENGINES:
        assert any(line.startswith(name + " ") for line in out.splitlines()), name


def test_missing_optional_solver(small_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "z3", None)  # as if z3-solver were not installed
    code, out, _ = run(capsys, "engines")
    assert code == 0
    smt_line = next(line for line in out.splitlines() if line.startswith("smt "))
    assert "no:" in smt_line and "certify[smt]" in smt_line
    spec = box_vnnlib(tmp_path / "p.vnnlib", 3, -1, 1, "(assert (<= Y_0 Y_1))\n")
    code, _, err = run(capsys, "check", str(small_model), str(spec), "--engine", "smt")
    assert code == 2
    assert_one_line_error(err, "smt", "certify[smt]")


# ----------------------------------------------------------------------------- VNN-COMP's gzipped files


def gzip_into(src: Path, folder: Path) -> Path:
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / f"{src.name}.gz"
    dst.write_bytes(gzip.compress(src.read_bytes()))
    return dst


def test_check_reads_gzipped_files_by_either_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    comp = tmp_path / "comp"
    gzip_into(TEST_BENCH / "test_sat.onnx", comp)
    gzip_into(TEST_BENCH / "test_prop.vnnlib", comp)
    comp.chmod(0o555)  # read-only, as the corpus is
    try:
        for model, spec in (("test_sat.onnx", "test_prop.vnnlib"), ("test_sat.onnx.gz", "test_prop.vnnlib.gz")):
            code, out, _ = run(capsys, "check", str(comp / model), str(comp / spec), "--engine", "fuzz",
                               "--timeout", "20", "--json", "-")
            assert code == 1, model
            data = json.loads(out)
            assert data["status"] == "violated" and data["counterexample"]["replayed"] is True
            assert data["counterexample"]["precision"] == "float32"
    finally:
        comp.chmod(0o755)
    assert sorted(p.name for p in comp.iterdir()) == ["test_prop.vnnlib.gz", "test_sat.onnx.gz"]


def test_gzipped_model_names_drop_gz(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    plain = export(dense(0, [20, 4, 2]), (20,), tmp_path / "wide.onnx")
    model = gzip_into(plain, tmp_path / "gz")
    spec = gzip_into(box_vnnlib(tmp_path / "p.vnnlib", 20, -1, 1, "(assert (<= Y_0 (+ Y_1 1000)))\n"), tmp_path / "gz")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, _ = run(capsys, "check", str(model), str(spec), "--engine", "fuzz", "--timeout", "20")
    assert code == 1
    assert "counterexample replayed in onnxruntime: yes\n" in out
    assert [p.name for p in work.iterdir()] == ["wide.p.cex.npz"]  # not wide.onnx.p.vnnlib.cex.npz


def test_bad_gzipped_inputs_are_one_line_errors(small_model: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    spec = box_vnnlib(tmp_path / "p.vnnlib", 3, -1, 1, "(assert (<= Y_0 Y_1))\n")
    (tmp_path / "bad.onnx.gz").write_bytes(b"this is not gzip data")
    code, _, err = run(capsys, "check", str(tmp_path / "bad.onnx"), str(spec))
    assert code == 2
    assert_one_line_error(err, "bad.onnx.gz")
    truncated = gzip_into(small_model, tmp_path / "t")
    truncated.write_bytes(truncated.read_bytes()[:-20])
    code, _, err = run(capsys, "check", str(truncated), str(spec))
    assert code == 2
    assert_one_line_error(err, "small.onnx.gz")
    yaml_gz = tmp_path / "s.yaml.gz"
    yaml_gz.write_bytes(b"")
    code, _, err = run(capsys, "check", str(small_model), str(yaml_gz))
    assert code == 2
    assert_one_line_error(err, "s.yaml.gz", "VNN-LIB")
    code, _, err = run(capsys, "check", str(tmp_path / "none.onnx"), str(spec))
    assert code == 2
    assert_one_line_error(err, "none.onnx")
