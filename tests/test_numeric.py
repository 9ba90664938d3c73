"""Soundness at the edges of floating point: no proof once values near float32's overflow.

The case that once answered a wrong HOLDS: a 4-3-2 ReLU net, every input in [3e38, 3.4e38]
(inside float32's range) and the unsafe set ``Y_0 >= -1e308``.  Every input is a
counterexample (onnxruntime gives ``y0 = inf``), yet bab's leaf LP, whose box bounds HiGHS
read as infinite, found every domain "infeasible" and the answer was HOLDS.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from certify.numeric import SAFE_MAGNITUDE, proof_range, vouch
from certify.problem import Box, HalfSpaces, Problem
from certify.spec_matrix import SpecMatrix
from certify.verdict import Status, Verdict
from tests.conformance.problems import relu_network
from tests.test_cli import assert_one_line_error, run
from tests.zoo import dense, export


@pytest.fixture()
def net_432(tmp_path: Path) -> Path:
    return export(dense(4, [4, 3, 2]), (4,), tmp_path / "net.onnx")


def _vnnlib(path: Path, n_in: int, lo: str, hi: str, rows: str) -> Path:
    decl = "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in)) + "(declare-const Y_0 Real)\n" \
        "(declare-const Y_1 Real)\n"
    bounds = "".join(f"(assert (>= X_{i} {lo}))\n(assert (<= X_{i} {hi}))\n" for i in range(n_in))
    path.write_text(decl + bounds + rows)
    return path


@pytest.mark.parametrize("engine", [None, "bab", "crown", "alpha-crown", "milp", "lp", "smt"])
def test_the_reported_wrong_holds_now_answers_violated_or_unknown(net_432: Path, tmp_path: Path, capsys,
                                                                    engine: str | None) -> None:
    spec = _vnnlib(tmp_path / "big.vnnlib", 4, "3e38", "3.4e38", "(assert (>= Y_0 -1e308))\n")
    out = tmp_path / "v.json"
    argv = ["check", str(net_432), str(spec), "--timeout", "3", "--json", str(out)]
    code, _, _ = run(capsys, *(argv + (["--engine", engine] if engine else [])))
    record = json.loads(out.read_text())
    assert record["status"] in ("violated", "unknown"), record
    assert code in (1, 3)
    if record["status"] == "violated":
        assert record["counterexample"]["replayed"]


def test_the_same_net_still_proves_on_an_ordinary_box(net_432: Path, tmp_path: Path, capsys) -> None:
    # The control: the guard takes nothing away where values are ordinary.
    spec = _vnnlib(tmp_path / "ok.vnnlib", 4, "-1", "1", "(assert (>= Y_0 1000))\n")
    code, out, _ = run(capsys, "check", str(net_432), str(spec), "--timeout", "10")
    assert code == 0 and out.startswith("HOLDS")


def test_a_box_past_float32s_range_is_refused(net_432: Path, tmp_path: Path, capsys) -> None:
    spec = _vnnlib(tmp_path / "past.vnnlib", 4, "3.5e38", "3.6e38", "(assert (>= Y_0 0))\n")
    code, _, err = run(capsys, "check", str(net_432), str(spec), "--timeout", "3")
    assert code == 2
    assert_one_line_error(err, "float32", "3.6e+38")


def test_non_finite_bounds_prove_nothing() -> None:
    problem = Problem(relu_network([(np.eye(2), np.zeros(2))], "id"), Box(np.zeros(2), np.ones(2)),
                      (HalfSpaces(np.array([[1.0, 0.0]]), np.array([0.5])),))
    spec = SpecMatrix.of(problem)
    lower = torch.tensor([[math.inf], [math.nan], [1.0], [-math.inf]], dtype=torch.float64)
    assert spec.proved(lower).tolist() == [False, False, True, False]


def test_an_overflowed_output_with_a_zero_coefficient_still_counts() -> None:
    rows = HalfSpaces(np.array([[-1.0, 0.0]]), np.array([1e308]))  # Y_0 >= -1e308
    assert rows.margin(np.array([math.inf, math.inf])) <= 0  # 0 * inf does not make it NaN
    assert rows.margin(np.array([-math.inf, 0.0])) > 0


def _identity_problem(scale_w: float, box: tuple[float, float], rhs: float = 0.0) -> Problem:
    w = np.array([[scale_w, -scale_w], [1.0, 1.0]], dtype=np.float32)
    net = relu_network([(w.astype(np.float64), np.zeros(2))], "pair")
    lo, hi = box
    return Problem(net, Box(np.full(2, lo), np.full(2, hi)), (HalfSpaces(np.array([[1.0, 0.0]]), np.array([rhs])),))


def test_proof_range_bounds_partial_sums_not_only_node_values() -> None:
    # x0 * 1e36 - x1 * 1e36 on [1e3, 1e3]: the node's value is 0, each product 1e39 overflows float32.
    assert not proof_range(_identity_problem(1e36, (1e3, 1e3))).ok
    assert proof_range(_identity_problem(1.0, (-1.0, 1.0))).ok
    found = proof_range(_identity_problem(1.0, (-1.0, 1.0), rhs=1e31))
    assert not found.ok and "disjunct" in found.where and found.largest > SAFE_MAGNITUDE


def test_vouch_withdraws_only_holds_outside_the_range() -> None:
    bad = _identity_problem(1e36, (1e3, 1e3))
    good = _identity_problem(1.0, (-1.0, 1.0))
    held = Verdict(Status.HOLDS, engine="crown")
    assert vouch(bad, held).status is Status.UNKNOWN and "float32" in vouch(bad, held).reason
    assert vouch(good, held) is held
    unknown = Verdict(Status.UNKNOWN, engine="crown", reason="r")
    assert vouch(bad, unknown) is unknown

