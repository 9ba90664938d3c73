"""The ``smt`` engine: the exact query in linear real arithmetic (QF_LRA), built with pysmt.

The formula is built from the :class:`~certify.encode.ConstraintSystem` with *exact rationals*:
every float64 weight, bias and bound becomes ``fractions.Fraction(value)`` (float32 model
weights are exactly representable), so the solver reasons about the real-valued network with
exactly the model's weights.  An ``unsat`` answer (HOLDS) is therefore sound for that
real-valued network; the only float computation it relies on is the CROWN pre-computation of
neuron bounds (float64, widened by :data:`certify.encode.BOUND_SLACK` before use), which
fixes stable ReLUs and bounds the variables to help the solver.

Unstable ReLUs are ``y = ite(x >= 0, x, 0)`` plus the redundant triangle lines; max
constraints are ``y >= x_i`` and ``or_i (y = x_i)``.  The logic (QF_LRA) is always passed
explicitly: with z3 4.x/5.x pysmt's auto-detected logic can make z3 answer ``unknown``.

A ``sat`` model is checked with ``network.forward`` (float64, the input snapped to float32);
when it sits exactly on the boundary of the unsafe set and does not survive rounding, the query
is asked again with every row tightened by ``tolerance * (1 + |b|)``.

Options: ``solver`` (a pysmt backend name: ``z3``, ``cvc5``... if installed), ``emit_smtlib``
(a path: the SMT-LIB2 text of the query is written there), ``tolerance``.
The z3 timeout comes from the budget's deadline (other backends get no timeout).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from certify.budget import Budget
from certify.encode import ENCODABLE_OPS, ConstraintSystem
from certify.engines.base import Capabilities, Support, check_modules, require_modules, supports_encoding
from certify.falsify import check_candidate
from certify.linprog import build_system
from certify.numeric import guarded
from certify.options import from_mapping
from certify.problem import Problem
from certify.verdict import Status, Verdict, unknown

log = logging.getLogger(__name__)

SMT_MODULES: tuple[tuple[str, str], ...] = (("pysmt", "pysmt"),)
BACKEND_MODULES: dict[str, tuple[str, str]] = {"z3": ("z3", "z3-solver"), "cvc5": ("cvc5", "cvc5"),
                                               "msat": ("mathsat", "mathsat"), "yices": ("yicespy", "yices")}


@dataclass(frozen=True, slots=True)
class SMTOptions:
    solver: str = "z3"
    emit_smtlib: str | None = None
    tolerance: float = 1e-6


def _modules(options: SMTOptions) -> tuple[tuple[str, str], ...]:
    return SMT_MODULES + ((BACKEND_MODULES.get(options.solver, (options.solver, options.solver))),)


def _q(value: float) -> Fraction:
    return Fraction(float(value))


#: Intervals narrower than this keep their exact bounds: rounding them outward to multiples of
#: ``2**-bits`` would let z3 move a variable the network holds fixed (an inactive ReLU's output)
#: enough for its model to differ from the network's.
_NARROW = 2.0**-8


def _q_out(value: float, bits: int, up: bool) -> Fraction:
    """``value`` rounded outward (down, or up when ``up``) to a multiple of ``2**-bits``.

    Short rationals keep z3's exact simplex fast; rounding bounds outward keeps them sound."""
    scaled = Fraction(float(value)) * (1 << bits)
    n = math.ceil(scaled) if up else math.floor(scaled)
    return Fraction(n, 1 << bits)


def _linear_rows(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, m: int) -> list[list[tuple[int, float]]]:
    out: list[list[tuple[int, float]]] = [[] for _ in range(m)]
    for r, c, v in zip(rows.tolist(), cols.tolist(), vals.tolist()):
        if v != 0.0:
            out[r].append((c, v))
    return out


class Formula:
    """The pysmt formula of a system: ``base`` (network and bounds) and the unsafe set."""

    def __init__(self, system: ConstraintSystem, bound_bits: int = 16, ite: bool = True) -> None:
        from pysmt.shortcuts import GE, LE, And, Equals, Ite, Or, Plus, Real, Symbol, Times
        from pysmt.typing import REAL

        self.system = system
        v = [Symbol(f"v{i}", REAL) for i in range(system.n)]
        self.vars = v
        zero = Real(0)

        def lin(terms: list[tuple[int, float]]) -> Any:
            if not terms:
                return zero
            return Plus([Times(Real(_q(c)), v[j]) if c != 1.0 else v[j] for j, c in terms])

        parts: list[Any] = []
        exact = set(system.inputs.tolist())  # the input box as given: a model's input lies in it
        for i in range(system.n):
            lo, hi = float(system.lower[i]), float(system.upper[i])
            if i in exact or hi - lo < _NARROW:  # narrow intervals (a value held at 0) stay exact too
                parts += [GE(v[i], Real(_q(lo))), LE(v[i], Real(_q(hi)))]
            else:
                parts += [GE(v[i], Real(_q_out(lo, bound_bits, False))), LE(v[i], Real(_q_out(hi, bound_bits, True)))]
        eq = system.eq
        for terms, rhs in zip(_linear_rows(eq.row, eq.col, eq.val, eq.shape[0]), eq.rhs.tolist()):
            parts.append(Equals(lin(terms), Real(_q(rhs))))
        ub = system.ub
        for terms, rhs in zip(_linear_rows(ub.row, ub.col, ub.val, ub.shape[0]), ub.rhs.tolist()):
            parts.append(LE(lin(terms), Real(_q(rhs))))
        r = system.relus
        for x, y, l, u in zip(r.x.tolist(), r.y.tolist(), r.lower.tolist(), r.upper.tolist()):
            if ite:
                parts.append(Equals(v[y], Ite(GE(v[x], zero), v[x], zero)))
            else:
                parts.append(Or(And(GE(v[x], zero), Equals(v[y], v[x])), And(LE(v[x], zero), Equals(v[y], zero))))
            parts.append(GE(v[y], v[x]))
            # chord: (u - l) y <= u (x - l), with l, u rounded outward
            ql, qu = _q_out(l, bound_bits, False), _q_out(u, bound_bits, True)
            parts.append(LE(Times(Real(qu - ql), v[y]), Plus(Times(Real(qu), v[x]), Real(-qu * ql))))
        for c in system.maxes:
            parts.extend(GE(v[c.y], v[x]) for x in c.xs)
            parts.append(Or([Equals(v[c.y], v[x]) for x in c.xs]))
        self.base = And(parts)
        self._lin = lin
        self._le, self._and, self._or, self._real = LE, And, Or, Real

    def unsafe(self, tolerance: float = 0.0) -> Any:
        """The unsafe disjunction, every row tightened by ``tolerance * (1 + |b_i|)``."""
        out = self.system.outputs
        disj = []
        for conj in self.system.unsafe:
            rows = []
            for a, b in zip(conj.A, conj.b):
                terms = [(int(out[j]), float(a[j])) for j in np.nonzero(a)[0]]
                rhs = _q(b) - _q(tolerance) * (1 + abs(_q(b)))
                rows.append(self._le(self._lin(terms), self._real(rhs)))
            disj.append(self._and(rows))
        return self._or(disj)


def write_smtlib(formula: Any, path: str | Path) -> None:
    """Write the SMT-LIB2 text of ``formula`` (logic QF_LRA, check-sat) to ``path``."""
    from pysmt.logics import QF_LRA
    from pysmt.smtlib.script import smtlibscript_from_formula

    script = smtlibscript_from_formula(formula, logic=QF_LRA)
    with open(path, "w") as fout:
        script.serialize(fout)


class SMTEngine:
    name = "smt"
    capabilities = Capabilities(proves=True, falsifies=True, complete=True, ops=ENCODABLE_OPS, extra="smt")

    def __init__(self, options: SMTOptions = SMTOptions()) -> None:
        self.options = options

    def available(self) -> Support:
        return check_modules(_modules(self.options), "smt")

    def complete_for(self, problem: Problem) -> bool:
        """The formula is exact in real arithmetic for every network it encodes."""
        return bool(self.supports(problem))

    def supports(self, problem: Problem) -> Support:
        return supports_encoding(self.name, problem)

    def _solve(self, base: Any, unsafe: Any, deadline: float) -> tuple[bool | None, Any]:
        """Solve ``base and unsafe`` in a fresh solver: (True (sat), False (unsat) or None
        (unknown / timeout), the solver).  A fresh solver per query rather than push/pop: z3's
        push after a satisfiable check could run for many minutes (ACAS Xu prop_1)."""
        from pysmt.exceptions import SolverReturnedUnknownResultError
        from pysmt.logics import QF_LRA
        from pysmt.shortcuts import Solver

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, None
        solver = Solver(name=self.options.solver, logic=QF_LRA, incremental=False)
        if hasattr(solver, "z3"):
            solver.z3.set("timeout", max(1, int(remaining * 1000)))
        solver.add_assertion(base)
        solver.add_assertion(unsafe)
        try:
            return bool(solver.solve()), solver
        except SolverReturnedUnknownResultError:
            solver.exit()
            return None, None

    @guarded
    def check(self, problem: Problem, budget: Budget) -> Verdict:
        from pysmt.shortcuts import And

        require_modules(self.name, _modules(self.options), "smt")
        start = time.monotonic()
        system = build_system(problem, budget=budget)
        f = Formula(system)
        if self.options.emit_smtlib:
            write_smtlib(And(f.base, f.unsafe()), self.options.emit_smtlib)
        stats = system.stats()
        queries = [0.0, self.options.tolerance]
        for k, tol in enumerate(queries):
            answer, solver = self._solve(f.base, f.unsafe(tol), budget.deadline)
            if answer is None:
                return unknown(self.name, f"{self.options.solver} answered unknown or ran out of time",
                               time.monotonic() - start, **stats)
            if not answer:
                solver.exit()
                if k == 0:
                    return Verdict(Status.HOLDS, engine=self.name, seconds=time.monotonic() - start,
                                   certificate={"method": "smt", "solver": self.options.solver,
                                                "logic": "QF_LRA", "exact": True}, stats=stats)
                return unknown(self.name, "violations exist only within the tolerance of the unsafe "
                               "set's boundary and none survives float rounding",
                               time.monotonic() - start, **stats)
            x = np.array([float(solver.get_value(f.vars[i]).constant_value()) for i in system.inputs])
            solver.exit()
            cex = check_candidate(problem, x.reshape(system.input_shape))
            if cex is not None:
                return Verdict(Status.VIOLATED, engine=self.name, seconds=time.monotonic() - start,
                               counterexample=cex, stats=stats)
        return unknown(self.name, "the solver's model does not violate the property in network.forward",
                       time.monotonic() - start, **stats)


def make_engine(options: Mapping[str, Any]) -> SMTEngine:
    return SMTEngine(from_mapping(SMTOptions, options, "smt"))
