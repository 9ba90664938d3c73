"""The ``bab`` engine: batched branch and bound, complete for piecewise-linear ReLU networks.

Two split modes (``BaBOptions.mode``), chosen automatically from the problem:

* ``input`` (:mod:`certify.bab.input_split`) for low-dimensional inputs (at most
  ``input_dims`` entries, e.g. ACAS Xu's 5): halves sub-boxes; complete for piecewise-linear
  networks, sound on the others;
* ``neuron`` (:mod:`certify.bab.neuron_split`) for larger inputs: splits unstable ReLUs and the
  intervals of any other elementwise activation (sigmoid, tanh, sign, sin...), enforcing the
  splits with beta-CROWN multipliers; on affine-and-ReLU networks it decides fully split
  leaves with an exact LP, so it is complete there.

HOLDS only when every leaf is proved; VIOLATED only with a concrete input whose float64 and
float32 outputs violate (the portfolio replays it in onnxruntime).  On timeout or at the
domain cap the answer is UNKNOWN with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from certify.bab.common import ENGINE
from certify.bab.neuron_split import leaf_exact
from certify.bab.options import BaBOptions
from certify.bab.record import Recorder, uncertifiable
from certify.bounds import CROWN_RULES, IBP_RULES
from certify.budget import Budget
from certify.engines.base import Capabilities, Support, supports_ops
from certify.network import ACTIVATIONS, Op
from certify.numeric import guarded
from certify.options import from_mapping
from certify.problem import Problem
from certify.verdict import Verdict

#: Ops CROWN and interval arithmetic have rules for (input mode takes any of them).
ALL_OPS = frozenset(op.value for op in IBP_RULES.keys() & CROWN_RULES.keys()) | {Op.INPUT.value}


def select_mode(problem: Problem, options: BaBOptions) -> str:
    """``input`` or ``neuron`` for this problem under ``options.mode``: neuron splitting needs an
    activation to split; in ``auto`` it takes the problems with more than ``input_dims`` free
    inputs (inputs the box fixes to one value are not split, so they do not count: dist_shift's
    792 inputs have 8 free ones, which input splitting settles in a few domains)."""
    splittable = bool(problem.network.ops() & ACTIVATIONS)
    if options.mode == "input" or not splittable:
        return "input"
    free = int(np.count_nonzero(np.asarray(problem.box.upper) > np.asarray(problem.box.lower)))
    if options.mode == "neuron" or free > options.input_dims:
        return "neuron"
    return "input"


class BaBEngine:
    name = ENGINE

    def __init__(self, options: BaBOptions) -> None:
        self.options = options
        self.capabilities = Capabilities(proves=True, falsifies=True, complete=True, ops=ALL_OPS)

    def available(self) -> Support:
        return Support(True)

    def complete_for(self, problem: Problem) -> bool:
        """Input splitting is complete on piecewise-linear nets (small boxes make them linear);
        neuron splitting on affine-and-ReLU nets (fully split leaves are linear: an LP decides)."""
        if not bool(self.supports(problem)) or not problem.network.is_piecewise_linear:
            return False
        net = problem.network
        return select_mode(problem, self.options) == "input" or leaf_exact(net)

    def supports(self, problem: Problem) -> Support:
        return supports_ops(self.name, self.capabilities.ops, problem)

    @guarded
    def check(self, problem: Problem, budget: Budget) -> Verdict:
        start = time.monotonic()
        mode = select_mode(problem, self.options)
        recorder = Recorder(problem) if budget.proofs and not uncertifiable(problem.network) else None
        if mode == "input":
            from certify.bab.input_split import input_split
            verdict = input_split(problem, self.options, budget, recorder)
        else:
            from certify.bab.neuron_split import neuron_split
            verdict = neuron_split(problem, self.options, budget, recorder)
        return verdict.with_time(time.monotonic() - start)


def make_engine(options: Mapping[str, Any]) -> BaBEngine:
    """The registry's factory: ``options`` are :class:`BaBOptions` fields, groups as mappings."""
    return BaBEngine(from_mapping(BaBOptions, options, "bab"))
