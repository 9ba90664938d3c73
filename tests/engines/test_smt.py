"""The exact SMT engine: it decides tiny nets, SMT-LIB output, missing z3 / pysmt."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from certify.budget import Budget
from certify.engines.registry import make_engine
from certify.errors import SolverUnavailable
from certify.verdict import Status
from tests.conformance.problems import forward, make_cases, random_case
from tests.conformance.test_conformance import ACCEPTED_UNKNOWN


def test_smt_decides_small_nets() -> None:
    """The brute-force cases (at most 9 interval-unstable ReLUs) take z3 well under a second each:
    with 20 s a case, smt must decide them, agree with the truth and give counterexamples that
    violate.  An UNKNOWN is accepted only when time ran out, or for the known input-rounding bug
    (see test_smt_formula_is_the_network_on_the_box); every holding case but one and two of
    the five violated ones at least are decided."""
    cases = [c for c in make_cases(15, seed=400) if c.truth_source == "brute-force"]
    assert len(cases) == 12
    engine = make_engine("smt")
    decided = {Status.HOLDS: 0, Status.VIOLATED: 0}
    for case in cases:
        v = engine.check(case.problem, Budget.seconds(20))
        if v.status is Status.UNKNOWN:
            assert any(r in v.reason for r in ACCEPTED_UNKNOWN["smt"]), (case.problem.name, v.reason)
            continue
        assert v.status is case.expected, case.problem.name
        decided[v.status] += 1
        if v.status is Status.VIOLATED:
            x = v.counterexample.x.reshape(-1).astype(np.float64)
            assert case.problem.box.contains(x)
            assert case.problem.violation(forward(case.layers, x[None])[0]) <= 0
    assert decided[Status.HOLDS] >= 6 and decided[Status.VIOLATED] >= 2, decided


def test_smt_formula_is_the_network_on_the_box() -> None:
    """The formula admits no input outside the box, and at an input of the box it admits no
    output other than the network's (up to 1e-6).  (Rounding every variable's bounds outward,
    the box's and those that hold an inactive ReLU's output at 0 too, once let z3's model leave
    the box and the network: smt answered UNKNOWN on violated problems it is complete for.)"""
    from fractions import Fraction

    from pysmt.shortcuts import GT, LT, And, Equals, Or, Real, is_sat

    from certify.engines.smt import Formula
    from certify.linprog import build_system

    case = random_case(1002)  # a violated conformance case smt has answered UNKNOWN on
    system = build_system(case.problem)
    formula = Formula(system)
    q = lambda value: Real(Fraction(float(value)))  # noqa: E731  (exact, as the box is)
    lo, hi = case.problem.box.lower.reshape(-1), case.problem.box.upper.reshape(-1)
    outside = Or([Or(LT(formula.vars[v], q(lo[k])), GT(formula.vars[v], q(hi[k])))
                  for k, v in enumerate(system.inputs)])
    x = ((lo + hi) / 2).astype(np.float32).astype(np.float64)
    y = forward(case.layers, x[None])[0]
    at_x = And([Equals(formula.vars[v], q(x[k])) for k, v in enumerate(system.inputs)])
    off = Or([Or(GT(formula.vars[v], q(y[k] + 1e-6)), LT(formula.vars[v], q(y[k] - 1e-6)))
              for k, v in enumerate(system.outputs)])
    assert not is_sat(And(formula.base, outside), solver_name="z3"), "an input outside the box"
    assert not is_sat(And(formula.base, at_x, off), solver_name="z3"), "an output that is not the network's"


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
