"""``certify spec validate|export`` and ``certify check`` on every example in specs/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from certify.cli import main
from certify.io.onnx import load_onnx
from certify.io.onnx_writer import network_to_onnx, save_onnx
from certify.io.vnnlib import parse_vnnlib, to_problems
from certify.io.vnnlib_writer import problem_to_vnnlib
from certify.io.yaml import load_spec
from certify.lower import SIGMA_PIECES, lower_document

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
MODEL = ROOT / "case_studies" / "quickstart" / "digits_mlp.onnx"

torch.set_num_threads(1)

#: example -> (engine that decides it quickly, expected exit code of `certify check`)
EXAMPLES = {
    "blur_digits.yaml": ("crown", 0),
    "blur_envelope_digits.yaml": ("crown", 0),
    "brightness_digits.yaml": ("crown", 0),
    "monotonicity_digits_pairwise.yaml": ("fuzz", 1),
    "monotonicity_digits_path.yaml": ("crown", 0),
    "output_range_digits.yaml": ("crown", 0),
    "robustness_digits.yaml": ("crown", 0),
    "robustness_digits_l2.yaml": ("crown", 0),
    "robustness_digits_suite.yaml": ("crown", 0),
    "robustness_digits_violated.yaml": ("fuzz", 1),
    "vnnlib_bundle.yaml": ("crown", 0),
}


def test_every_example_is_listed() -> None:
    assert set(EXAMPLES) | {"robustness_inline.yaml"} == {p.name for p in SPECS.glob("*.yaml")}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_check_works_on_each_example(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine, code = EXAMPLES[name]
    argv = ["check", str(MODEL), str(SPECS / name), "--engine", engine, "--timeout", "30",
            "--device", "cpu", "--cex", str(tmp_path / "cex.npz")]
    assert main(argv) == code
    out = capsys.readouterr().out
    assert out.startswith("HOLDS" if code == 0 else "VIOLATED")
    if code == 1:
        assert "replayed in onnxruntime: yes" in out


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spec", "validate", str(SPECS / "blur_digits.yaml"), "--model", str(MODEL)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK") and f"{3 + SIGMA_PIECES} problem(s)" in out
    assert main(["spec", "validate", str(SPECS / "robustness_inline.yaml")]) == 0


BAD = {
    "unknown kind": ("kind: blurr\ninput: [1]\n", False, ["kind 'blurr'", "blur_tolerance"]),
    "missing field": ("kind: blur_tolerance\nkernel: {type: box, size: 3}\n", False, ["input:", "missing"]),
    "lo > hi": ("kind: brightness_contrast\ninput: [1]\ncontrast: [1.2, 0.8]\n", False,
                ["contrast:", "lo <= hi", "line 3"]),
    "nested field": ("kind: blur_tolerance\ninput: [1]\nkernel: {type: gaussian, size: 3}\n", False,
                     ["kernel.sigma:", "gaussian"]),
    "form field": ("kind: monotonicity\nform: path\nfeatures: [1]\nbackground: 0\ntarget: [1]\noutput: 0\n",
                   False, ["features:", "form 'pairwise'"]),
    "feature out of range": ("kind: monotonicity\nfeatures: [3, 64]\nlower: 0\nupper: 1\noutput: 0\n", True,
                             ["features: [64] out of range", "64 inputs"]),
    "shape mismatch": ("kind: brightness_contrast\ninput: [0.5, 0.5]\n", True,
                       ["input: spec gives 2 input values", "expects 64"]),
    "output out of range": ("kind: output_range\nlower: 0\nupper: 1\noutputs: [{output: 10, max: 1}]\n", True,
                            ["outputs[0].output: [10]"]),
}


@pytest.mark.parametrize("text, with_model, expected", list(BAD.values()), ids=list(BAD))
@pytest.mark.parametrize("command", ["validate", "check"])
def test_bad_spec_is_one_line_and_exit_2(text: str, with_model: bool, expected: list[str], command: str,
                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    argv = (["spec", "validate", str(path)] + (["--model", str(MODEL)] if with_model else [])
            if command == "validate" else ["check", str(MODEL), str(path), "--engine", "crown"])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("certify: error: ")
    assert str(path) in err
    for part in expected:
        assert part in err


def test_export_writes_vnnlib_and_augmented_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["spec", "export", str(SPECS / "brightness_digits.yaml"), "--model", str(MODEL),
                 "--vnnlib", str(out)]) == 0
    rows = (out / "instances.csv").read_text().split()
    assert len(rows) == 1
    onnx_name, vnnlib_name, _ = rows[0].split(",")
    network = load_onnx(out / onnx_name)
    (problem,) = to_problems(parse_vnnlib(out / vnnlib_name), network)
    assert problem.box.shape == (2,)  # (contrast, brightness)
    (lowered,) = lower_document(load_spec(SPECS / "brightness_digits.yaml"), load_onnx(MODEL), model_path=MODEL)
    np.testing.assert_array_equal(problem.box.lower, lowered.problem.box.lower)
    z = problem.box.center.astype(np.float32)
    session = onnxruntime.InferenceSession(str(out / onnx_name))
    (y,) = session.run(None, {session.get_inputs()[0].name: z[None]})
    np.testing.assert_allclose(y.reshape(-1), lowered.oracle.run(z), atol=1e-4)  # type: ignore[union-attr]


def test_export_refuses_l2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["spec", "export", str(SPECS / "robustness_digits_l2.yaml"), "--model", str(MODEL),
                 "--vnnlib", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "norm: an L2 ball cannot be exported" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["monotonicity_digits_pairwise.yaml", "monotonicity_digits_path.yaml",
                                  "blur_digits.yaml", "output_range_digits.yaml"])
def test_writers_round_trip(name: str, tmp_path: Path) -> None:
    """The written ONNX equals Network.forward in onnxruntime; the VNN-LIB reads back exactly."""
    model = load_onnx(MODEL)
    lowered = lower_document(load_spec(SPECS / name), model, model_path=MODEL)
    rng = np.random.default_rng(0)
    for lw in lowered:
        problem = lw.problem
        path = save_onnx(problem.network, tmp_path / "net.onnx")
        session = onnxruntime.InferenceSession(str(path))
        xs = rng.uniform(problem.box.lower, problem.box.upper, size=(5, *problem.box.shape)).astype(np.float32)
        for x in xs:
            (y,) = session.run(None, {"input": x[None]})
            with torch.no_grad():
                want = problem.network(torch.from_numpy(x)[None]).numpy()
            np.testing.assert_allclose(y, want, atol=1e-4)
        (back,) = to_problems(parse_vnnlib(_write(tmp_path, problem_to_vnnlib(problem))), problem.network)
        np.testing.assert_array_equal(back.box.lower, problem.box.lower)
        np.testing.assert_array_equal(back.box.upper, problem.box.upper)
        assert len(back.unsafe) == len(problem.unsafe)
        for a, b in zip(back.unsafe, problem.unsafe):
            np.testing.assert_array_equal(a.A, b.A)
            np.testing.assert_array_equal(a.b, b.b)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.vnnlib"
    path.write_text(text)
    return path


def test_onnx_writer_covers_conv_pool_and_shape_ops(tmp_path: Path) -> None:
    from tests.zoo import conv, to_network

    for pool in ("max", "avg"):
        _, network = to_network(conv(1, pool=pool), (1, 8, 8), tmp_path)
        session = onnxruntime.InferenceSession(network_to_onnx(network).SerializeToString())
        x = np.random.default_rng(1).normal(size=(3, 1, 8, 8)).astype(np.float32)
        for xi in x:
            (y,) = session.run(None, {"input": xi[None]})
            with torch.no_grad():
                np.testing.assert_allclose(y, network(torch.from_numpy(xi)[None]).numpy(), atol=1e-4)
