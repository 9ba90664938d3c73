"""The ``bab`` engine: batched branch and bound, complete for piecewise-linear ReLU networks.

Two split modes (``BaBOptions.mode``), chosen automatically from the problem:

* ``input`` (:mod:`certify.bab.input_split`) for low-dimensional inputs (at most
  ``input_dims`` entries, e.g. ACAS Xu's 5) and for networks that are not piecewise linear
  (sound there, but not complete: the answer may be UNKNOWN at timeout);
* ``relu`` (:mod:`certify.bab.relu_split`) for larger inputs: splits unstable ReLUs, enforcing
  the splits with beta-CROWN multipliers, and decides fully split leaves with an exact LP.

HOLDS only when every leaf is proved; VIOLATED only with a concrete input whose float64 and
float32 outputs violate (the portfolio replays it in onnxruntime).  On timeout or at the
domain cap the answer is UNKNOWN with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from certify.bab.common import ENGINE
from certify.bab.options import BaBOptions
from certify.bounds import CROWN_RULES, IBP_RULES
from certify.budget import Budget
from certify.engines.base import Capabilities, Support, supports_ops
from certify.network import AFFINE_OPS, Op
from certify.numeric import guarded
from certify.options import from_mapping
from certify.problem import Problem
from certify.verdict import Verdict

#: Ops CROWN and interval arithmetic have rules for (input mode takes any of them).
ALL_OPS = frozenset(op.value for op in IBP_RULES.keys() & CROWN_RULES.keys()) | {Op.INPUT.value}


#: Ops ReLU splitting takes: its leaves are decided by an LP that reads every other op as exact,
#: so besides ReLU (split) and max pooling (relaxed, leaves then undecided) only affine ops.
RELU_SPLIT_OPS: frozenset[Op] = AFFINE_OPS | {Op.RELU, Op.MAXPOOL}


def select_mode(problem: Problem, options: BaBOptions) -> str:
    """``input`` or ``relu`` for this problem under ``options.mode``."""
    net = problem.network
    splittable = Op.RELU in net.ops() and net.ops() <= RELU_SPLIT_OPS
    if options.mode == "relu" and splittable:
        return "relu"
    if options.mode == "input":
        return "input"
    if net.input_size <= options.input_dims or not splittable:
        return "input"
    return "relu"


class BaBEngine:
    name = ENGINE

    def __init__(self, options: BaBOptions) -> None:
        self.options = options
        self.capabilities = Capabilities(proves=True, falsifies=True, complete=True, ops=ALL_OPS)

    def available(self) -> Support:
        return Support(True)

    def complete_for(self, problem: Problem) -> bool:
        """Input splitting is complete on piecewise-linear nets (small boxes make them linear);
        ReLU splitting too, except with max pooling, whose fully split leaves stay relaxed."""
        if not bool(self.supports(problem)) or not problem.network.is_piecewise_linear:
            return False
        return select_mode(problem, self.options) == "input" or Op.MAXPOOL not in problem.network.ops()

    def supports(self, problem: Problem) -> Support:
        return supports_ops(self.name, self.capabilities.ops, problem)

    @guarded
    def check(self, problem: Problem, budget: Budget) -> Verdict:
        start = time.monotonic()
        mode = select_mode(problem, self.options)
        if mode == "input":
            from certify.bab.input_split import input_split
            verdict = input_split(problem, self.options, budget)
        else:
            from certify.bab.relu_split import relu_split
            verdict = relu_split(problem, self.options, budget)
        return verdict.with_time(time.monotonic() - start)


def make_engine(options: Mapping[str, Any]) -> BaBEngine:
    """The registry's factory: ``options`` are :class:`BaBOptions` fields, groups as mappings."""
    return BaBEngine(from_mapping(BaBOptions, options, "bab"))
