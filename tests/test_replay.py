"""Counterexamples from boxes float32 cannot represent: the float64 replay.

A VNN-LIB box may fix an input to a real value with no float32 inside it (``lower == upper ==
0.1``): no float32 input lies in such a box, so the strict float32 replay can never succeed.
For such boxes (and only those) the candidate itself is replayed on a float64 copy of the model.

The model here is ``y0 = x0 + x1 + x2``, ``y1 = x0 - x1`` written with a Cast to float, a Constant
node and a Gemm (so the float64 copy must convert each of them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from certify.budget import Budget
from certify.cli import main
from certify.engines.base import Capabilities, Support
from certify.engines.registry import EngineEntry, register
from certify.instance import Instance
from certify.io.onnx import load_onnx
from certify.io.runtime import float64_copy
from certify.portfolio import Preset, Stage, run_portfolio
from certify.problem import Box, HalfSpaces, Problem
from certify.replay import OnnxOracle, replay
from certify.verdict import Counterexample, Status, Verdict
from tests.zoo import onnx_helper_model, save

W = np.array([[1.0, 1.0], [1.0, -1.0], [1.0, 0.0]])  # Gemm's B: y = x @ W


def sum_model(path: Path) -> Path:
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["one"], value_float=1.0),
        helper.make_node("Mul", ["xf", "one"], ["xs"]),
        helper.make_node("Gemm", ["xs", "W", "b"], ["y"]),
    ]
    model = onnx_helper_model(nodes, {"x": [1, 3]}, {"y": [1, 2]}, {"W": W, "b": np.zeros(2)})
    return save(model, path)


def vnnlib(path: Path, bounds: list[tuple[float | str, float | str]], out: str) -> Path:
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(len(bounds)))
    text += "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
    text += "".join(f"(assert (>= X_{i} {lo}))\n(assert (<= X_{i} {hi}))\n" for i, (lo, hi) in enumerate(bounds))
    path.write_text(text + out)
    return path


def check_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = main(["check", *argv, "--json", "-"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_box_without_float32_point_is_recognized() -> None:
    fixed = Box(np.array([0.1, -1.0]), np.array([0.1, 1.0]))
    assert not fixed.holds_float32_point
    assert Box(np.array([0.5, -1.0]), np.array([0.5, 1.0])).holds_float32_point  # 0.5 is a float32
    assert Box(np.array([0.1, -1.0]), np.array([0.1000001, 1.0])).holds_float32_point
    below, above = np.nextafter(np.float32(0.1), np.float32(0)), np.float32(0.1)
    assert float(below) < 0.1 < float(above)
    # just inside the gap between two neighbouring float32 values: no point
    assert not Box(np.array([float(below) + 1e-12]), np.array([float(above) - 1e-12])).holds_float32_point


def test_float64_copy_computes_in_float64(tmp_path: Path) -> None:
    import onnx

    path = sum_model(tmp_path / "m.onnx")
    copy = float64_copy(onnx.load(str(path)))
    assert copy.graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE
    assert all(t.data_type == TensorProto.DOUBLE for t in copy.graph.initializer)
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # unchanged
    x = np.array([0.1, 0.2, 0.3])
    oracle = OnnxOracle(path)
    y64 = oracle.run_float64(x)
    assert y64[0] == pytest.approx(0.1 + 0.2 + 0.3, rel=1e-15, abs=0)
    assert y64[1] == pytest.approx(0.1 - 0.2, rel=1e-15, abs=0)
    y32 = oracle.run(x)
    assert abs(y32[0] - 0.6) > 1e-9  # the float32 model rounds: the two really differ


def test_fixed_inputs_violation_replays_in_float64(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = sum_model(tmp_path / "m.onnx")
    # x0 = x1 = 0.1 exactly (no float32 there), x2 free; unsafe y0 >= 1.1: true for x2 >= 0.9
    spec = vnnlib(tmp_path / "p.vnnlib", [("0.1", "0.1"), ("0.1", "0.1"), (-1, 1)], "(assert (>= Y_0 1.1))\n")
    code, data, _ = check_json(capsys, str(model), str(spec), "--timeout", "20")
    assert code == 1 and data["status"] == "violated"
    cex = data["counterexample"]
    assert cex["replayed"] is True and cex["precision"] == "float64"
    x = np.array(cex["x"])
    assert x[0] == 0.1 and x[1] == 0.1 and -1 <= x[2] <= 1  # inside the box, exactly
    assert x[0] + x[1] + x[2] >= 1.1
    assert cex["y"][0] == pytest.approx(x[0] + x[1] + x[2], rel=1e-14)

    code = main(["check", str(model), str(spec), "--timeout", "20"])
    out, _ = capsys.readouterr()
    assert code == 1
    assert "counterexample replayed in onnxruntime: yes (float64 copy: the box holds no float32 point)" in out


def test_box_with_float32_points_still_replays_in_float32(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = sum_model(tmp_path / "m.onnx")
    spec = vnnlib(tmp_path / "p.vnnlib", [("0.1", "0.2"), ("0.1", "0.2"), (-1, 1)], "(assert (>= Y_0 1.1))\n")
    code, data, _ = check_json(capsys, str(model), str(spec), "--timeout", "20")
    assert code == 1
    cex = data["counterexample"]
    assert cex["replayed"] is True and cex["precision"] == "float32"
    x = np.array(cex["x"])
    assert np.array_equal(x.astype(np.float32).astype(np.float64), x)  # float32 values
    assert np.all(x >= [0.1, 0.1, -1]) and np.all(x <= [0.2, 0.2, 1])
    code = main(["check", str(model), str(spec), "--timeout", "20"])
    out, _ = capsys.readouterr()
    assert "counterexample replayed in onnxruntime: yes\n" in out


# --- a candidate the float64 copy does not confirm -----------------------------------------

#: The unsafe set ``y0 >= 0.1 + 1e-9`` at x0 = 0.1 (x1 = x2 = 0): violated by the float32 model at
#: float32(0.1) = 0.10000000149 (a point outside the box), not by the real (float64) value 0.1.
EDGE = 0.1 + 1e-9
ANSWER: dict[str, Any] = {}


class ProposingEngine:
    """Says VIOLATED at the point in ANSWER, claiming it replayed (the gate must not believe it)."""

    name = "proposer"
    capabilities = Capabilities(proves=False, falsifies=True, complete=False, ops=frozenset())

    def available(self) -> Support:
        return Support(True)

    def supports(self, problem: Problem) -> Support:
        return Support(True)

    def check(self, problem: Problem, budget: Budget) -> Verdict:
        x = ANSWER["x"]
        return Verdict(Status.VIOLATED, self.name, counterexample=Counterexample(x, np.zeros(2), replayed=True))


def make_proposer(options: Mapping[str, Any]) -> ProposingEngine:
    return ProposingEngine()


REGISTRY = register(EngineEntry("proposer", "tests.test_replay:make_proposer", "test engine"))


def edge_instance(tmp_path: Path) -> Instance:
    path = sum_model(tmp_path / "m.onnx")
    unsafe = HalfSpaces(np.array([[-1.0, 0.0]]), np.array([-EDGE]))  # -y0 <= -EDGE
    box = Box(np.array([0.1, 0.0, 0.0]), np.array([0.1, 0.0, 0.0]))
    return Instance(Problem(load_onnx(path), box, (unsafe,), name="edge"), OnnxOracle(path))


def test_float64_copy_that_does_not_violate_is_not_violated(tmp_path: Path) -> None:
    inst = edge_instance(tmp_path)
    oracle = inst.oracle
    assert isinstance(oracle, OnnxOracle)
    rounded = np.array([0.1, 0.0, 0.0], dtype=np.float32)
    assert inst.problem.violation(oracle.run(rounded)) <= 0  # the float32 model "violates" off the box
    assert replay(oracle, inst.problem, np.array([0.1, 0.0, 0.0])) is None
    assert replay(oracle, inst.problem, rounded) is None  # clipped back to 0.1 first

    ANSWER["x"] = rounded.astype(np.float64)
    verdict = run_portfolio(inst, Preset("proposer", (Stage("proposer"),)), Budget.seconds(5), REGISTRY)
    assert verdict.status is Status.UNKNOWN and verdict.counterexample is None
    assert "float64 copy" in verdict.reason


def test_a_real_float64_violation_comes_back_with_its_precision(tmp_path: Path) -> None:
    inst = edge_instance(tmp_path)
    lower = HalfSpaces(np.array([[-1.0, 0.0]]), np.array([-0.1]))  # y0 >= 0.1: true at x0 = 0.1
    problem = Problem(inst.problem.network, inst.problem.box, (lower,), name="edge")
    ANSWER["x"] = np.array([0.1, 0.0, 0.0])
    verdict = run_portfolio(Instance(problem, inst.oracle), Preset("proposer", (Stage("proposer"),)),
                            Budget.seconds(5), REGISTRY)
    assert verdict.status is Status.VIOLATED
    cex = verdict.counterexample
    assert cex is not None and cex.replayed and cex.precision == "float64"
    assert problem.box.contains(cex.x)


def test_oracle_without_float64_gives_no_counterexample(tmp_path: Path) -> None:
    class Float32Only:
        def run(self, x: np.ndarray) -> np.ndarray:
            return np.array([1e9, 0.0])  # would violate anything

    inst = edge_instance(tmp_path)
    assert replay(Float32Only(), inst.problem, np.array([0.1, 0.0, 0.0])) is None


def _conv_identity(tmp_path: Path) -> tuple[Path, Problem]:
    """A 1x1 Conv with weight 1 (``y = x``), a box fixing x0 to 0.1, unsafe ``y0 <= 1``."""
    conv = helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1])
    flat = helper.make_node("Flatten", ["c"], ["y"])
    model = onnx_helper_model([conv, flat], {"x": [1, 1, 1, 2]}, {"y": [1, 2]},
                              {"w": np.ones((1, 1, 1, 1))})
    path = save(model, tmp_path / "conv.onnx")
    problem = Problem(load_onnx(path), Box(np.array([[[0.1, -1.0]]]), np.array([[[0.1, 1.0]]])),
                      (HalfSpaces(np.array([[1.0, 0.0]]), np.array([1.0])),))
    return path, problem


def test_float64_copy_onnxruntime_cannot_run_replays_in_the_reference_evaluator(tmp_path: Path) -> None:
    # onnxruntime has no double kernel for Conv: onnx's reference evaluator runs the copy
    path, problem = _conv_identity(tmp_path)
    cex = replay(OnnxOracle(path), problem, np.array([0.1, 0.0]))
    assert cex is not None and cex.precision == "float64" and cex.runtime == "onnx-reference"
    assert cex.y[0] == pytest.approx(0.1, abs=1e-15)  # float64 arithmetic: 0.1 exactly as given


def test_float64_copy_that_nothing_can_run_is_unknown_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from certify.io import runtime

    def fail(self: object, names: object, feeds: object) -> None:
        raise NotImplementedError("no kernel")

    monkeypatch.setattr(runtime.ReferenceSession, "run", fail)
    path, problem = _conv_identity(tmp_path)
    with caplog.at_level("WARNING"):
        assert replay(OnnxOracle(path), problem, np.array([0.1, 0.0])) is None
    assert any("float64 copy" in r.getMessage() and "no kernel" in r.getMessage() for r in caplog.records)


def edge_bias_model(path: Path) -> Path:
    """``y0 = x0 - float32(0.1)``: at ``x0 = 0.1`` (real) it is -1.5e-9 in float64, 0 in float32."""
    gemm = helper.make_node("Gemm", ["x", "W", "b"], ["y"])
    model = onnx_helper_model([gemm], {"x": [1, 2]}, {"y": [1, 1]},
                              {"W": np.array([[1.0], [0.0]]), "b": np.array([-0.1])})
    return save(model, path)


@pytest.mark.parametrize("engine", ["bab", "milp", "smt"])
def test_engines_pass_float64_candidates_of_such_boxes_to_the_replay(
        engine: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The violation exists only in float64 (float32 rounds it away), so each engine's own check
    must judge the candidate in float64 for a box without float32 points."""
    from certify.engines.registry import make_engine

    if not make_engine(engine).available():
        pytest.skip(f"{engine} is not installed")
    model = edge_bias_model(tmp_path / "edge.onnx")
    spec = tmp_path / "p.vnnlib"
    spec.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                    "(assert (>= X_0 0.1))\n(assert (<= X_0 0.1))\n(assert (>= X_1 -1))\n(assert (<= X_1 1))\n"
                    "(assert (<= Y_0 -0.000000001))\n")
    code, data, _ = check_json(capsys, str(model), str(spec), "--engine", engine, "--timeout", "10")
    assert code == 1 and data["status"] == "violated", data["reason"]
    cex = data["counterexample"]
    assert cex["precision"] == "float64" and cex["x"][0] == 0.1 and -1 <= cex["x"][1] <= 1
    assert cex["y"][0] <= -1e-9


def test_fuzzer_moves_its_hits_into_such_boxes(tmp_path: Path) -> None:
    """The fuzzer's lanes hold float32 values, one just outside a box without float32 points;
    its hits must come back inside the box (float64), with or without an oracle."""
    from certify.fuzz import FuzzOptions, fuzz_many

    path = sum_model(tmp_path / "m.onnx")
    box = Box(np.array([0.1, 0.1, -1.0]), np.array([0.1, 0.1, 1.0]))
    problem = Problem(load_onnx(path), box, (HalfSpaces(np.array([[-1.0, 0.0]]), np.array([-1.1])),))
    for oracle_for in (None, lambda i: OnnxOracle(path)):
        (outcome,) = fuzz_many([problem], Budget.seconds(10), FuzzOptions(), oracle_for)
        cex = outcome.verdict.counterexample
        assert outcome.verdict.status is Status.VIOLATED and cex is not None
        assert box.contains(cex.x), cex.x
        assert cex.x[0] == 0.1 and cex.x[1] == 0.1


def test_fuzz_engine_through_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = sum_model(tmp_path / "m.onnx")
    spec = vnnlib(tmp_path / "p.vnnlib", [("0.1", "0.1"), ("0.1", "0.1"), (-1, 1)], "(assert (>= Y_0 1.1))\n")
    code, data, _ = check_json(capsys, str(model), str(spec), "--engine", "fuzz", "--timeout", "10")
    assert code == 1 and data["counterexample"]["precision"] == "float64"
    assert data["counterexample"]["x"][:2] == [0.1, 0.1]
