"""The ``lp`` engine: the triangle relaxation of every unstable ReLU, solved with cvxpy.

Intermediate bounds come from CROWN (:func:`certify.bounds.crown_bounds`, float64); the
network is turned into a :class:`~certify.encode.ConstraintSystem` and each unstable ReLU
``y = relu(x)`` with bounds ``l < 0 < u`` is replaced by its two lower lines ``y >= 0``,
``y >= x`` and the chord ``y <= u (x - l) / (u - l)`` (the lines of :mod:`certify.relax`).

How a proof is decided: for each unsafe disjunct ``A y <= b`` the LP

    minimize t   subject to   relaxation,  A y - b <= t

is solved; its optimum ``t*`` is a lower bound of the disjunct's worst-case margin over the
box.  The disjunct is ruled out only when ``t* > tolerance * (1 + max |b|)`` (default
``1e-5``, two orders above the LP solvers' ~1e-7 feasibility tolerances), so a HOLDS never
rests on a solver's infeasibility flag or on its rounding.  Anything else is UNKNOWN.

The module also holds the pieces shared with ``multineuron`` and ``milp``: availability
checks, building the system, and :func:`solve_disjuncts`.
"""

from __future__ import annotations

import importlib
import logging
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from certify.bounds import Bounds, crown_bounds, input_bounds
from certify.encode import ENCODABLE_OPS, ConstraintSystem, encode, encodable
from certify.engines.base import Budget, Capabilities, Support
from certify.errors import SolverUnavailable
from certify.numeric import LP_MAGNITUDE, guarded
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


def check_modules(modules: tuple[tuple[str, str], ...], extra: str) -> Support:
    """Support(True) when every module imports, else why not and which extra installs it."""
    for module, package in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            return Support(False, f"{package} is not installed: pip install 'certify[{extra}]'")
    return Support(True)


def require_modules(engine: str, modules: tuple[tuple[str, str], ...], extra: str) -> None:
    """Raise :class:`SolverUnavailable` when one of ``modules`` cannot be imported."""
    for module, package in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise SolverUnavailable(engine, package, extra) from None


def supports_encoding(engine: str, problem: Problem) -> Support:
    missing = encodable(problem)
    if missing:
        return Support(False, f"{engine} has no exact linear encoding for op(s) {', '.join(missing)}")
    return Support(True)


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


@dataclass
class Model:
    """A linear model ``lower <= v <= upper, A_eq v = b_eq, A_ub v <= b_ub`` plus integer
    columns (``integer`` indices), built from a system and optional extra rows."""

    system: ConstraintSystem
    lower: np.ndarray
    upper: np.ndarray
    A_ub: sp.csr_matrix
    b_ub: np.ndarray
    n_int: int = 0  # extra integer (binary) columns appended after the system's variables
    A_eq_extra: sp.csr_matrix | None = None
    b_eq_extra: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


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
            g = model.meta["G_int"]  # rows over [v, d]
            cons.append(g[:, :n] @ v + g[:, n:] @ d <= model.meta["h_int"])
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
    if model.meta.get("G_int") is not None:
        parts += [model.meta["G_int"].data, model.meta["h_int"]]
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


@dataclass(frozen=True, slots=True)
class LPOptions:
    solver: str = "auto"  # auto (Clarabel, else HiGHS) | highs | clarabel | any cvxpy LP solver
    tolerance: float = LP_TOLERANCE


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


class LPEngine:
    name = "lp"
    capabilities = Capabilities(proves=True, falsifies=False, complete=False, ops=CVXPY_OPS, extra="lp")

    def __init__(self, options: LPOptions = LPOptions()) -> None:
        self.options = options

    def available(self) -> Support:
        return check_modules(CVXPY_MODULES, "lp")

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
    return LPEngine(LPOptions(**dict(options)))
