"""The ``lp`` engine: the triangle relaxation of every unstable ReLU, solved with cvxpy.

Intermediate bounds come from CROWN (:func:`certify.bounds.crown_bounds`, float64); the
network is turned into a :class:`~certify.encode.ConstraintSystem` and each unstable ReLU
``y = relu(x)`` with bounds ``l < 0 < u`` is replaced by its two lower lines ``y >= 0``,
``y >= x`` and the chord ``y <= u (x - l) / (u - l)`` (the lines of :mod:`certify.relax`).

How a proof is decided: for each unsafe disjunct ``A y <= b`` the LP

    minimize t   subject to   relaxation,  A y - b <= t

is solved (:mod:`certify.linprog`); its optimum ``t*`` is a lower bound of the disjunct's
worst-case margin over the box.  The disjunct is ruled out only when
``t* > tolerance * (1 + max |b|)`` (default ``1e-5``, two orders above the LP solvers' ~1e-7
feasibility tolerances).  Anything else is UNKNOWN.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from certify.budget import Budget
from certify.engines.base import Capabilities, Support, check_modules, require_modules, supports_encoding
from certify.linprog import (
    CVXPY_MODULES,
    CVXPY_OPS,
    LP_TOLERANCE,
    build_system,
    relaxation_model,
    relaxation_verdict,
    solve_disjuncts,
)
from certify.numeric import guarded
from certify.options import from_mapping
from certify.problem import Problem
from certify.verdict import Verdict


@dataclass(frozen=True, slots=True)
class LPOptions:
    solver: str = "auto"  # auto (Clarabel, else HiGHS) | highs | clarabel | any cvxpy LP solver
    tolerance: float = LP_TOLERANCE


class LPEngine:
    name = "lp"
    capabilities = Capabilities(proves=True, falsifies=False, complete=False, ops=CVXPY_OPS, extra="lp")

    def __init__(self, options: LPOptions = LPOptions()) -> None:
        self.options = options

    def available(self) -> Support:
        return check_modules(CVXPY_MODULES, "lp")

    def complete_for(self, problem: Problem) -> bool:
        return False

    def supports(self, problem: Problem) -> Support:
        return supports_encoding(self.name, problem)

    @guarded
    def check(self, problem: Problem, budget: Budget) -> Verdict:
        require_modules(self.name, CVXPY_MODULES, "lp")
        start = time.monotonic()
        system = build_system(problem, budget=budget)
        results = solve_disjuncts(relaxation_model(system), self.options.solver, budget.deadline)
        return relaxation_verdict(self.name, system, results, self.options.tolerance,
                                  time.monotonic() - start, **system.stats())


def make_engine(options: Mapping[str, Any]) -> LPEngine:
    return LPEngine(from_mapping(LPOptions, options, "lp"))
