"""The exact MILP engine: brute-force agreement, counterexamples, deadline, missing HiGHS."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from certify.budget import Budget
from certify.engines.registry import make_engine
from certify.errors import SolverUnavailable
from certify.verdict import Status
from tests.conformance.problems import brute_force_margin, forward, make_cases, random_case


def test_milp_agrees_with_brute_force_on_tiny_nets() -> None:
    torch.set_num_threads(1)
    cases = [c for c in make_cases(18, seed=200) if c.truth_source == "brute-force"]
    assert len(cases) >= 4
    engine = make_engine("milp")
    for case in cases:
        v = engine.check(case.problem, Budget.seconds(30))
        assert v.status is case.expected, case.problem.name
        if v.status is Status.VIOLATED:
            x = v.counterexample.x.reshape(-1).astype(np.float64)
            assert case.problem.violation(forward(case.layers, x[None])[0]) <= 0


def test_milp_margin_matches_brute_force() -> None:
    from certify.engines.milp import milp_model
    from certify.linprog import build_system, solve_disjuncts

    case = next(c for c in make_cases(12, seed=300) if c.truth_source == "brute-force")
    for hs in case.problem.unsafe:
        from certify.problem import Problem

        p = Problem(case.problem.network, case.problem.box, (hs,))
        (res,) = solve_disjuncts(milp_model(build_system(p)), "highs", 1e18)
        assert res.value == pytest.approx(brute_force_margin(case.layers, p.box, hs), abs=1e-6)


def test_expired_budget_gives_unknown() -> None:
    case = random_case(4)
    v = make_engine("milp").check(case.problem, Budget.seconds(0.0))
    assert v.status is Status.UNKNOWN


def test_missing_highspy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "highspy", None)
    engine = make_engine("milp")
    assert not engine.available() and "certify[lp]" in engine.available().reason
    with pytest.raises(SolverUnavailable) as err:
        engine.check(random_case(2).problem, Budget.seconds(5))
    assert err.value.package == "highspy"
