"""Incomplete bound-propagation engines: ``ibp``, ``crown`` and ``alpha-crown``.

They prove HOLDS when the lower bound of every unsafe disjunct's best row is positive (see
:mod:`certify.engines.spec_matrix`), and otherwise answer UNKNOWN; they never falsify.
Bounds are computed in float64.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from certify.bab.record import Recorder, search_dtype, uncertifiable
from certify.bounds import (
    CROWN_RULES,
    IBP_RULES,
    AlphaOptions,
    alpha_crown_objective,
    crown_bounds,
    crown_objective,
    ibp,
    ibp_objective,
    input_bounds,
)
from certify.budget import Budget
from certify.engines.base import Capabilities, Support, supports_ops
from certify.errors import UsageError
from certify.network import Op
from certify.numeric import guarded
from certify.options import from_mapping
from certify.problem import Problem
from certify.proof.certificate import Certificate
from certify.spec_matrix import SpecMatrix
from certify.verdict import Status, Verdict, unknown

#: The ops every bound method has rules for (interval and CROWN tables).
ALL_OPS = frozenset(op.value for op in IBP_RULES.keys() & CROWN_RULES.keys()) | {Op.INPUT.value}


@dataclass(frozen=True, slots=True)
class BoundOptions:
    """``method`` (set by the engine's name); alpha-crown's ``iterations``, step ``lr`` and
    ``shared_alpha`` (one slope per neuron for all spec rows); the ``dtype`` bounds use
    (float32 only where the proof checker re-checks the HOLDS, else float64)."""

    method: Literal["ibp", "crown", "alpha-crown"] = "crown"
    iterations: int = 40
    lr: float = 0.25
    shared_alpha: bool = False
    dtype: Literal["float64", "float32"] = "float64"


def _dtype(name: str) -> torch.dtype:
    return {"float64": torch.float64, "float32": torch.float32}[name]


@dataclass(frozen=True, slots=True)
class BoundResult:
    lower: torch.Tensor  # [S] lower bounds of the rows C y
    disjunct_margins: torch.Tensor  # [K]
    proved: bool
    proof: Certificate | None = None  # when asked for (budget.proofs) and the network allows one


def bound_problem(problem: Problem, options: BoundOptions, device: str = "cpu",
                  budget: Budget | None = None) -> BoundResult:
    """Bound every unsafe row of ``problem`` over its whole box with the chosen method; past the
    ``budget``'s deadline the refinements stop (the bounds stay sound, only looser).  A proof
    from crown or alpha-crown comes with its certificate when ``budget.proofs`` asks for it."""
    dtype = search_dtype(_dtype(options.dtype), problem.network, budget or Budget.unlimited())
    net = problem.network.to(dtype=dtype, device=device)
    box = input_bounds(problem.box.lower[None], problem.box.upper[None], dtype, device)
    spec = SpecMatrix.of(problem, dtype, device)
    c = spec.batch(1)
    alphas = None
    with torch.no_grad():
        if options.method == "ibp":
            bounds = ibp(net, box)
            lower = ibp_objective(net, bounds, c)
        else:
            bounds = crown_bounds(net, box, budget=budget)
            if budget is not None and budget.expired:  # no time for a backward pass: intervals
                lower = ibp_objective(net, bounds, c)
            elif options.method == "crown":
                lower = crown_objective(net, bounds, c).lower
            else:
                best, alphas = alpha_crown_objective(
                    net, bounds, c,
                    AlphaOptions(iterations=options.iterations, lr=options.lr, shared=options.shared_alpha),
                    stop=lambda lo: bool(spec.proved(lo).all()), budget=budget)
                lower = best.lower
    margins = spec.disjunct_margins(lower)
    proved = bool(spec.proved(lower)[0])
    proof = None
    if proved and budget is not None and budget.proofs and options.method != "ibp" and not uncertifiable(net):
        rec = Recorder(problem)
        slopes = None if alphas is None else rec.flat_alphas(alphas, lower)
        rec.close(torch.zeros(1, dtype=torch.long), lower, margins > 0, spec, slopes, rec.unstable(bounds))
        proof = rec.build()
    return BoundResult(lower[0], margins[0], proved, proof)


class BoundEngine:
    """One class for the three bound methods; the registry names them ibp/crown/alpha-crown."""

    def __init__(self, options: BoundOptions) -> None:
        self.options = options
        self.name = options.method
        self.capabilities = Capabilities(proves=True, falsifies=False, complete=False, ops=ALL_OPS)

    @classmethod
    def from_options(cls, method: str, options: Mapping[str, Any]) -> BoundEngine:
        if "method" in options:
            raise UsageError(f"{method}: 'method' is the engine's name, not an option")
        return cls(replace(from_mapping(BoundOptions, options, method), method=method))

    def available(self) -> Support:
        return Support(True)

    def complete_for(self, problem: Problem) -> bool:
        return False

    def supports(self, problem: Problem) -> Support:
        return supports_ops(self.name, self.capabilities.ops, problem)

    @guarded
    def check(self, problem: Problem, budget: Budget) -> Verdict:
        start = time.monotonic()
        res = bound_problem(problem, self.options, budget.device, budget)
        seconds = time.monotonic() - start
        margins = [round(float(m), 6) for m in res.disjunct_margins]
        if res.proved:
            return Verdict(Status.HOLDS, engine=self.name, seconds=seconds,
                           certificate={"method": self.name, "disjunct_margins": margins}, proof=res.proof)
        open_ = sum(1 for m in res.disjunct_margins if float(m) <= 0)
        late = " (cut short by the timeout)" if budget.expired else ""
        return unknown(self.name, f"{self.name} bounds{late} do not rule out {open_} of {len(margins)} unsafe "
                       f"disjunct(s) (worst margin {min(margins):.4g})", seconds,
                       disjunct_margins=margins)
