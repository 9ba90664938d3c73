"""The ``fuzz`` engine: the batch fuzzer (:mod:`certify.fuzz`) on one problem.

It only falsifies: a VIOLATED verdict carries a counterexample checked in float64 on the IR
(``replayed=False``; the portfolio replays it in onnxruntime before reporting).  It never
answers HOLDS.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from certify.budget import Budget
from certify.engines.base import Capabilities, Support, supports_ops
from certify.fuzz.batch import fuzz_many
from certify.fuzz.options import FuzzOptions
from certify.network import FORWARD, Op
from certify.problem import Problem
from certify.verdict import Verdict

#: The fuzzer only runs the network forward and autograd backward: every op FORWARD knows but
#: an opaque model (no gradient; the ``sample`` engine takes those).
FUZZ_OPS = frozenset(op.value for op in FORWARD if op is not Op.OPAQUE) | {"input"}


class FuzzEngine:
    name = "fuzz"

    def __init__(self, options: FuzzOptions) -> None:
        self.options = options
        self.capabilities = Capabilities(proves=False, falsifies=True, complete=False, ops=FUZZ_OPS)

    def available(self) -> Support:
        return Support(True)

    def complete_for(self, problem: Problem) -> bool:
        return False

    def supports(self, problem: Problem) -> Support:
        return supports_ops(self.name, self.capabilities.ops, problem)

    def check(self, problem: Problem, budget: Budget) -> Verdict:
        return fuzz_many([problem], budget, self.options)[0].verdict


def make_engine(options: Mapping[str, Any]) -> FuzzEngine:
    """The registry's factory: ``options`` are :class:`~certify.fuzz.options.FuzzOptions` fields."""
    return FuzzEngine(FuzzOptions.from_mapping(options))
