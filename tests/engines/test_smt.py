"""The exact SMT engine: agreement on tiny nets, SMT-LIB output, missing z3 / pysmt."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from certify.engines.base import Budget
from certify.engines.registry import make_engine
from certify.errors import SolverUnavailable
from certify.verdict import Status
from tests.conformance.problems import forward, make_cases


def test_smt_agrees_on_tiny_nets() -> None:
    cases = [c for c in make_cases(15, seed=400) if c.truth_source == "brute-force"][:5]
    assert cases
    engine = make_engine("smt")
    for case in cases:
        v = engine.check(case.problem, Budget.seconds(20))
        assert v.status in (case.expected, Status.UNKNOWN)
        if v.status is Status.VIOLATED:
            x = v.counterexample.x.reshape(-1).astype(np.float64)
            assert case.problem.violation(forward(case.layers, x[None])[0]) <= 0


def test_emit_smtlib(tmp_path: Path) -> None:
    case = make_cases(1, seed=3)[0]
    path = tmp_path / "query.smt2"
    make_engine("smt", {"emit_smtlib": str(path)}).check(case.problem, Budget.seconds(20))
    text = path.read_text()
    assert "(set-logic QF_LRA)" in text and "(check-sat)" in text and "ite" in text


def test_unknown_backend_is_unavailable() -> None:
    engine = make_engine("smt", {"solver": "no-such-solver"})
    assert not engine.available()


def test_missing_z3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "z3", None)  # import z3 -> ImportError
    engine = make_engine("smt")
    support = engine.available()
    assert not support and "pip install 'certify[smt]'" in support.reason
    with pytest.raises(SolverUnavailable) as err:
        engine.check(make_cases(1, seed=3)[0].problem, Budget.seconds(5))
    assert err.value.package == "z3-solver" and err.value.extra == "smt"


def test_missing_pysmt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pysmt", None)
    engine = make_engine("smt")
    assert not engine.available()
    with pytest.raises(SolverUnavailable):
        engine.check(make_cases(1, seed=3)[0].problem, Budget.seconds(5))
