"""The ``milp`` engine: the exact big-M MILP of a piecewise-linear network (cvxpy + HiGHS).

Each unstable ReLU ``y = relu(x)`` (bounds ``l < 0 < u`` from CROWN) gets one binary ``d``:

    y >= 0,  y >= x,  y <= u d,  y <= x - l (1 - d)

and each max constraint one binary per window element.  Stable ReLUs are linear (see
:mod:`certify.encode`).  For each unsafe disjunct ``A y <= b`` the MILP minimizes ``t`` with
``A y - b <= t``:

* the disjunct is ruled out when HiGHS's proven (dual) bound on ``t`` exceeds
  ``tolerance * (1 + max|b|)``: a HOLDS rests on the optimum, not on an infeasibility flag;
* when the optimal point has ``t <= tolerance`` its input is checked with ``network.forward``
  (float64, snapped into the box as float32); if it does not violate the property (big-M and
  integrality tolerances), the activation pattern is fixed and the exact linear region's LP is
  re-solved ("polish"); if that does not violate either, the answer is UNKNOWN.

The counterexample is returned with ``replayed=False``: the portfolio replays it in onnxruntime.
The solve respects the budget's deadline (HiGHS ``time_limit``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from certify.budget import Budget
from certify.encode import ConstraintSystem
from certify.engines.base import Capabilities, Support, check_modules, require_modules, supports_encoding
from certify.falsify import check_candidate
from certify.linprog import (
    CVXPY_MODULES,
    CVXPY_OPS,
    DisjunctResult,
    Model,
    build_system,
    margin_tolerance,
    relaxation_model,
    solve_disjuncts,
)
from certify.numeric import guarded
from certify.options import from_mapping
from certify.problem import Problem
from certify.verdict import Status, Verdict, unknown

#: A disjunct is ruled out when the MILP's proven bound exceeds ``tolerance * (1 + max|b|)``.
MILP_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class MILPOptions:
    tolerance: float = MILP_TOLERANCE
    solver: str = "highs"


def milp_model(system: ConstraintSystem) -> Model:
    """The exact model: the LP relaxation plus binaries for unstable ReLUs and max windows."""
    import scipy.sparse as sp

    model = relaxation_model(system)
    n = system.n
    r = system.relus
    k = r.count
    n_max = sum(len(c.xs) for c in system.maxes)
    n_int = k + n_max
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    rhs: list[float] = []
    m = 0
    for i in range(k):
        xi, yi, li, ui, di = int(r.x[i]), int(r.y[i]), float(r.lower[i]), float(r.upper[i]), n + i
        # y - u d <= 0
        rows += [m, m]; cols += [yi, di]; vals += [1.0, -ui]; rhs.append(0.0); m += 1
        # y - x - l d <= -l
        rows += [m, m, m]; cols += [yi, xi, di]; vals += [1.0, -1.0, -li]; rhs.append(-li); m += 1
    eq_rows: list[int] = []
    eq_cols: list[int] = []
    eq_vals: list[float] = []
    eq_rhs: list[float] = []
    col = n + k
    for j, c in enumerate(system.maxes):
        top = float(np.max(system.upper[list(c.xs)]))
        for x in c.xs:
            big = top - float(system.lower[x])
            # y - x + big d <= big
            rows += [m, m, m]; cols += [c.y, x, col]; vals += [1.0, -1.0, big]; rhs.append(big); m += 1
            eq_rows.append(j); eq_cols.append(col); eq_vals.append(1.0)
            col += 1
        eq_rhs.append(1.0)
    total = n + n_int
    model = replace(model, n_int=n_int, G_int=sp.csr_matrix((vals, (rows, cols)), shape=(m, total)),
                    h_int=np.asarray(rhs, dtype=np.float64))
    if system.maxes:
        model = replace(model, A_eq_extra=sp.csr_matrix((eq_vals, (eq_rows, eq_cols)), shape=(len(system.maxes), total)),
                        b_eq_extra=np.asarray(eq_rhs))
    return model


def region_model(system: ConstraintSystem, active: np.ndarray) -> Model:
    """The LP of one linear region: every unstable ReLU fixed to the phase ``active[i]``."""
    import scipy.sparse as sp

    model = relaxation_model(system)
    r = system.relus
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    m = 0
    for i in range(r.count):
        xi, yi = int(r.x[i]), int(r.y[i])
        if active[i]:  # y <= x (with y >= x from the relaxation) and x >= 0
            rows += [m, m, m + 1]; cols += [yi, xi, xi]; vals += [1.0, -1.0, -1.0]; m += 2
        else:  # y <= 0 and x <= 0
            rows += [m, m + 1]; cols += [yi, xi]; vals += [1.0, 1.0]; m += 2
    g = sp.csr_matrix((vals, (rows, cols)), shape=(m, system.n))
    return replace(model, A_ub=sp.vstack([model.A_ub, g]).tocsr(), b_ub=np.concatenate([model.b_ub, np.zeros(m)]))


def decide(engine: str, problem: Problem, system: ConstraintSystem, results: list[DisjunctResult],
           tolerance: float, polish: Any, start: float, **stats: Any) -> Verdict:
    """Shared verdict logic of the exact engines.  ``polish(x_full) -> x_input | None`` may
    return a better candidate when the solver's point does not replay."""
    margins: list[float] = []
    issues: list[str] = []
    for k, res in enumerate(results):
        tol = margin_tolerance(system, k, tolerance)
        margins.append(res.bound)
        if res.x is not None and res.value <= tol:
            x_in = res.x[system.inputs].reshape(system.input_shape)
            cex = check_candidate(problem, x_in)
            if cex is None and polish is not None:
                better = polish(res.x, k)
                cex = check_candidate(problem, better) if better is not None else None
            if cex is not None:
                return Verdict(Status.VIOLATED, engine=engine, seconds=time.monotonic() - start,
                               counterexample=cex, stats={"disjunct": k, "margin": res.value, **stats})
            if res.value < -tol:
                issues.append(f"disjunct {k}: solver point (margin {res.value:.3g}) does not violate "
                              f"in network.forward")
                continue
        if not res.bound > tol:
            issues.append(f"disjunct {k}: {res.status}, bound {res.bound:.3g} within tolerance {tol:.1g}")
    seconds = time.monotonic() - start
    if len(results) < len(system.unsafe):
        issues.append(f"only {len(results)} of {len(system.unsafe)} disjuncts were solved")
    if not issues:
        return Verdict(Status.HOLDS, engine=engine, seconds=seconds,
                       certificate={"method": engine, "disjunct_margins": [float(m) for m in margins]},
                       stats=dict(stats))
    return unknown(engine, "; ".join(issues), seconds, **stats)


class MILPEngine:
    name = "milp"
    capabilities = Capabilities(proves=True, falsifies=True, complete=True, ops=CVXPY_OPS, extra="lp")

    def __init__(self, options: MILPOptions = MILPOptions()) -> None:
        self.options = options

    def available(self) -> Support:
        return check_modules(CVXPY_MODULES, "lp")

    def complete_for(self, problem: Problem) -> bool:
        """The MILP is exact for every network it encodes (ReLU, max pooling, affine ops)."""
        return bool(self.supports(problem))

    def supports(self, problem: Problem) -> Support:
        return supports_encoding(self.name, problem)

    @guarded
    def check(self, problem: Problem, budget: Budget) -> Verdict:
        require_modules(self.name, CVXPY_MODULES, "lp")
        start = time.monotonic()
        system = build_system(problem)
        results = solve_disjuncts(milp_model(system), self.options.solver, budget.deadline, stop_on_violation=True)

        def polish(x_full: np.ndarray, k: int) -> np.ndarray | None:
            if system.maxes or budget.expired:
                return None
            active = x_full[system.relus.x] > 0
            sub = ConstraintSystem(system.n, system.lower, system.upper, system.eq, system.ub, system.relus,
                                   system.maxes, system.inputs, system.outputs, (system.unsafe[k],),
                                   system.input_shape)
            (res,) = solve_disjuncts(region_model(sub, active), "auto", budget.deadline)
            return None if res.x is None else res.x[system.inputs].reshape(system.input_shape)

        return decide(self.name, problem, system, results, self.options.tolerance, polish, start,
                      **system.stats())


def make_engine(options: Mapping[str, Any]) -> MILPEngine:
    return MILPEngine(from_mapping(MILPOptions, options, "milp"))
