"""LP and MILP models of an encoded network, solved through cvxpy: shared by the ``lp``,
``multineuron`` and ``milp`` engines (engines never import each other).

A :class:`Model` is ``lower <= v <= upper, A_eq v = b_eq, A_ub v <= b_ub`` over the variables
of a :class:`~certify.encode.ConstraintSystem`, plus optional binary columns.  For each unsafe
disjunct ``A y <= b`` :func:`solve_disjuncts` minimizes ``t`` with ``A y - b <= t``; its optimum
(or, with integers, HiGHS's proven dual bound) lower-bounds the disjunct's worst-case margin,
and a disjunct is ruled out only when that bound clears a tolerance: a HOLDS never rests on an
infeasibility flag or a solver's rounding.  Models whose numbers exceed
:data:`~certify.numeric.LP_MAGNITUDE` are not handed to a solver.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from certify.bounds import Bounds, crown_bounds, input_bounds
from certify.budget import Budget
from certify.encode import ENCODABLE_OPS, ConstraintSystem, encode
from certify.numeric import LP_MAGNITUDE
from certify.problem import Problem
from certify.relax import relu_relaxation
from certify.verdict import Status, Verdict, unknown

if TYPE_CHECKING:
    import scipy.sparse as sp

log = logging.getLogger(__name__)

#: A disjunct is ruled out when the LP optimum exceeds ``LP_TOLERANCE * (1 + max|b|)``.
LP_TOLERANCE = 1e-5

#: (module, package to name in the message) each cvxpy-based engine needs.
CVXPY_MODULES: tuple[tuple[str, str], ...] = (("cvxpy", "cvxpy"), ("highspy", "highspy"))


def problem_bounds(problem: Problem, device: str = "cpu", budget: Budget | None = None) -> dict[str, Bounds]:
    """CROWN bounds of every node over the problem's box (float64, batch of 1); interval bounds
    for the nodes reached after the ``budget``'s deadline."""
    net = problem.network.to(dtype=torch.float64, device=device)
    box = input_bounds(problem.box.lower[None], problem.box.upper[None], torch.float64, device)
    with torch.no_grad():
        out = crown_bounds(net, box, budget=budget)
    return {k: Bounds(v.lower.cpu(), v.upper.cpu()) for k, v in out.items()}


def build_system(problem: Problem, device: str = "cpu", budget: Budget | None = None) -> ConstraintSystem:
    return encode(problem, problem_bounds(problem, device, budget))


def triangle_rows(system: ConstraintSystem) -> tuple[sp.csr_matrix, np.ndarray]:
    """Rows ``G v <= h`` of the triangle relaxation of every unstable ReLU of ``system``.

    Lines from :func:`certify.relax.relu_relaxation` (lower slope 1, and the chord); the lower
    slope-0 line ``y >= 0`` is the variable bound of ``y``.
    """
    import scipy.sparse as sp

    r = system.relus
    if r.count == 0:
        return sp.csr_matrix((0, system.n)), np.zeros(0)
    l = torch.as_tensor(r.lower)
    u = torch.as_tensor(r.upper)
    rel = relu_relaxation(l, u, torch.ones_like(l))
    ls, lb = rel.lower_slope.numpy(), rel.lower_bias.numpy()
    us, ub = rel.upper_slope.numpy(), rel.upper_bias.numpy()
    k = r.count
    rows = np.concatenate([np.arange(k), np.arange(k), np.arange(k, 2 * k), np.arange(k, 2 * k)])
    cols = np.concatenate([r.y, r.x, r.y, r.x])
    # ls*x + lb - y <= 0   and   y - us*x <= ub
    vals = np.concatenate([-np.ones(k), ls, np.ones(k), -us])
    rhs = np.concatenate([-lb, ub])
    return sp.csr_matrix((vals, (rows, cols)), shape=(2 * k, system.n)), rhs


def max_relaxation_rows(system: ConstraintSystem) -> tuple[sp.csr_matrix, np.ndarray]:
    """``y >= x_i`` for every max constraint (the upper side is ``y <= max_i u_i``, a bound)."""
    import scipy.sparse as sp

    rows, cols, vals = [], [], []
    m = 0
    for c in system.maxes:
        for x in c.xs:
            rows += [m, m]
            cols += [x, c.y]
            vals += [1.0, -1.0]
            m += 1
    return sp.csr_matrix((vals, (rows, cols)), shape=(m, system.n)), np.zeros(m)


def tightened_max_bounds(system: ConstraintSystem) -> tuple[np.ndarray, np.ndarray]:
    """Variable bounds with ``max_i l_i <= y <= max_i u_i`` for every max constraint."""
    lo, hi = system.lower.copy(), system.upper.copy()
    for c in system.maxes:
        xs = list(c.xs)
        lo[c.y] = max(lo[c.y], float(np.max(system.lower[xs])))
        hi[c.y] = min(hi[c.y], float(np.max(system.upper[xs])))
    return lo, hi


@dataclass(frozen=True, slots=True)
class DisjunctResult:
    """Outcome of one disjunct's optimization.

    ``bound`` is a proven lower bound of ``min max_i (A_i y - b_i)`` when the solve finished
    (``-inf`` when it did not); ``value`` the objective of the returned point; ``x`` the values
    of every variable at that point (``None`` without one).
    """

    bound: float
    value: float
    x: np.ndarray | None
    status: str
    seconds: float


@dataclass(frozen=True, slots=True, eq=False)
class Model:
    """A linear model ``lower <= v <= upper, A_eq v = b_eq, A_ub v <= b_ub`` plus ``n_int``
    binary columns appended after the system's variables (rows ``G_int [v, d] <= h_int`` and
    equalities ``A_eq_extra [v, d] = b_eq_extra`` over them), built from a system and extra rows."""

    system: ConstraintSystem
    lower: np.ndarray
    upper: np.ndarray
    A_ub: sp.csr_matrix
    b_ub: np.ndarray
    n_int: int = 0
    G_int: sp.csr_matrix | None = None
    h_int: np.ndarray | None = None
    A_eq_extra: sp.csr_matrix | None = None
    b_eq_extra: np.ndarray | None = None


def relaxation_model(system: ConstraintSystem, extra: list[tuple[sp.spmatrix, np.ndarray]] | None = None) -> Model:
    """The LP of the triangle relaxation (plus ``extra`` rows ``G v <= h``)."""
    import scipy.sparse as sp

    parts = [(system.ub.matrix(), system.ub.rhs), triangle_rows(system), max_relaxation_rows(system)] + list(extra or [])
    a = sp.vstack([sp.csr_matrix(p[0]) for p in parts]).tocsr()
    b = np.concatenate([p[1] for p in parts])
    lo, hi = tightened_max_bounds(system)
    return Model(system, lo, hi, a, b)


def pick_solver(name: str, integer: bool) -> str:
    import cvxpy as cp

    installed = set(cp.installed_solvers())
    if name != "auto":
        if name.upper() not in installed:
            raise ValueError(f"solver {name!r} is not installed (installed: {sorted(installed)})")
        return name.upper()
    if integer:
        return "HIGHS"
    # Measured (2 shared cores): ACAS Xu LP (599 variables) Clarabel 1.3 s vs HiGHS 20 s;
    # MNIST 256x4 LP (2823 variables, 9 disjuncts) Clarabel within seconds, HiGHS > 100 s.
    return "CLARABEL" if "CLARABEL" in installed else "HIGHS"


def solve_disjuncts(model: Model, solver: str, deadline: float, stop_on_violation: bool = False) -> list[DisjunctResult]:
    """For each unsafe disjunct ``A y <= b`` of the system, minimize ``t`` with ``A y - b <= t``.

    With integer columns (MILP) the proven bound is HiGHS's dual bound.  Disjuncts after the
    deadline get ``bound = -inf``.  ``stop_on_violation`` ends the loop at the first disjunct
    whose returned point has ``value < 0`` (a candidate counterexample).
    """
    import cvxpy as cp

    system = model.system
    n = system.n
    a_eq = system.eq.matrix()
    results: list[DisjunctResult] = []
    largest = _largest_entry(model)
    if not largest <= LP_MAGNITUDE:
        reason = f"numbers up to {largest:.3g} exceed what the solver handles (limit {LP_MAGNITUDE:.0e})"
        return [DisjunctResult(-np.inf, np.inf, None, reason, 0.0) for _ in system.unsafe]
    for conj in system.unsafe:
        remaining = deadline - time.monotonic()
        if remaining <= 0.05:
            results.append(DisjunctResult(-np.inf, np.inf, None, "deadline", 0.0))
            continue
        start = time.monotonic()
        v = cp.Variable(n)
        t = cp.Variable()
        cons = [v >= model.lower, v <= model.upper]
        if a_eq.shape[0]:
            cons.append(a_eq @ v == system.eq.rhs)
        if model.A_ub.shape[0]:
            cons.append(model.A_ub @ v <= model.b_ub)
        scale = float(np.max(np.abs(conj.A), initial=1.0))
        a_out = conj.A / scale
        cons.append(a_out @ v[system.outputs] - conj.b / scale <= t)
        d = None
        if model.n_int:
            d = cp.Variable(model.n_int, boolean=True)
            g = model.G_int  # rows over [v, d]
            cons.append(g[:, :n] @ v + g[:, n:] @ d <= model.h_int)
            if model.A_eq_extra is not None and model.A_eq_extra.shape[0]:
                e = model.A_eq_extra
                cons.append(e[:, :n] @ v + e[:, n:] @ d == model.b_eq_extra)
        prob = cp.Problem(cp.Minimize(t), cons)
        chosen = pick_solver(solver, model.n_int > 0)
        opts: dict[str, Any] = {"time_limit": max(0.1, remaining)}
        if chosen == "HIGHS" and model.n_int:
            opts["mip_rel_gap"] = 1e-9
            opts["mip_abs_gap"] = 1e-9
            opts["threads"] = 1
        try:
            with warnings.catch_warnings():  # "inaccurate" solutions are not used as proofs
                warnings.simplefilter("ignore")
                prob.solve(solver=chosen, **opts)
        except (cp.error.SolverError, ValueError) as exc:  # ValueError: cvxpy cannot unpack a failed solve
            log.info("solver %s failed: %s", chosen, exc)
            results.append(DisjunctResult(-np.inf, np.inf, None, f"solver error: {exc}", time.monotonic() - start))
            continue
        status = prob.status
        value = float(t.value) * scale if t.value is not None else np.inf
        x = np.asarray(v.value, dtype=np.float64) if v.value is not None else None
        bound = -np.inf
        if status == cp.OPTIMAL:
            bound = value
            if model.n_int:
                info = prob.solver_stats.extra_stats if prob.solver_stats else None
                dual = getattr(info, "mip_dual_bound", None) if info is not None else None
                if dual is not None and np.isfinite(dual):
                    bound = min(value, float(dual) * scale)
        elif status == cp.INFEASIBLE and not model.n_int:
            # The LP has bounded variables and a free t: it cannot be infeasible unless the
            # bounds themselves are inconsistent; we do not prove anything from that.
            bound = -np.inf
        results.append(DisjunctResult(bound, value, x, str(status), time.monotonic() - start))
        if stop_on_violation and x is not None and value < 0:
            break
    return results


def _largest_entry(model: Model) -> float:
    """The largest magnitude among the model's bounds, coefficients and right-hand sides (and the
    unsafe rows'); ``inf`` when one is not finite."""
    system = model.system
    parts = [model.lower, model.upper, model.A_ub.data, model.b_ub, system.eq.val, system.eq.rhs]
    parts += [c.A.ravel() for c in system.unsafe] + [c.b for c in system.unsafe]
    if model.G_int is not None:
        parts += [model.G_int.data, model.h_int]
    largest = 0.0
    for part in parts:
        a = np.abs(np.asarray(part, dtype=np.float64))
        if a.size:
            if not np.all(np.isfinite(a)):
                return np.inf
            largest = max(largest, float(a.max()))
    return largest


def margin_tolerance(system: ConstraintSystem, k: int, tolerance: float) -> float:
    return tolerance * (1 + float(np.max(np.abs(system.unsafe[k].b), initial=0.0)))


CVXPY_OPS: frozenset[str] = ENCODABLE_OPS


def relaxation_verdict(engine: str, system: ConstraintSystem, results: list[DisjunctResult],
                       tolerance: float, seconds: float, **stats: Any) -> Verdict:
    """HOLDS when every disjunct's proven bound clears the tolerance, else UNKNOWN."""
    margins = [r.bound for r in results]
    tols = [margin_tolerance(system, k, tolerance) for k in range(len(results))]
    open_ = [k for k, (m, tol) in enumerate(zip(margins, tols)) if not m > tol]
    rounded = [float(round(m, 8)) if np.isfinite(m) else float(m) for m in margins]
    if not open_:
        return Verdict(Status.HOLDS, engine=engine, seconds=seconds,
                       certificate={"method": engine, "disjunct_margins": rounded}, stats=dict(stats))
    return unknown(engine, f"{engine} relaxation does not rule out {len(open_)} of {len(margins)} unsafe "
                   f"disjunct(s) (worst margin {min(margins):.4g})", seconds, disjunct_margins=rounded, **stats)


@dataclass(frozen=True, slots=True)
class SmallLP:
    """The outcome of :func:`solve_small`: ``status`` 0 optimal, 2 infeasible, other: no answer
    (scipy's codes); ``x`` the optimal point and ``duals`` the multipliers ``>= 0`` of the rows
    ``a_ub x <= b_ub`` (optimal: ``cost . x >= min over the bounds of (cost + a_ub' duals) . x -
    duals . b_ub``, equal at the optimum), when optimal."""

    status: int
    x: np.ndarray | None
    duals: np.ndarray | None = None


def solve_small(cost: np.ndarray, a_ub: np.ndarray, b_ub: np.ndarray,
                bounds: list[tuple[float | None, float | None]]) -> SmallLP:
    """``min cost . x`` subject to ``a_ub x <= b_ub`` and per-variable ``bounds``, for the small
    dense LPs branch and bound solves by the thousand (a fully split leaf's region): HiGHS
    through scipy directly, without the cvxpy model the engines' large sparse LPs go through.
    Data past :data:`~certify.numeric.LP_MAGNITUDE` (or not finite) is not solved (status 4)."""
    from scipy.optimize import linprog

    finite = [np.asarray(a, dtype=np.float64) for a in (cost, a_ub, b_ub)]
    finite += [np.array([b for pair in bounds for b in pair if b is not None], dtype=np.float64)]
    if not all(np.all(np.isfinite(a)) and np.all(np.abs(a) <= LP_MAGNITUDE) for a in finite):
        return SmallLP(4, None)  # HiGHS reads values past 1e20 as infinite: its answer would mean nothing
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    marginals = getattr(getattr(res, "ineqlin", None), "marginals", None)
    duals = None if marginals is None or res.x is None else np.maximum(-np.asarray(marginals, dtype=np.float64), 0.0)
    return SmallLP(int(res.status), None if res.x is None else np.asarray(res.x), duals)
