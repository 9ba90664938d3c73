"""The ``sample`` engine: a black-box search for counterexamples on models certify could not
convert (an ``opaque`` network: the original model run whole in onnxruntime, no gradients).

Each round draws points in the box: at first the box's centre, its lower and upper corners and
random corners, then uniform points and, once a best point exists, Gaussian steps around it
whose radius halves after every round without progress (and resets when it gets tiny).  A point
whose outputs fall in the unsafe set is returned; the portfolio replays it in onnxruntime
(float32, or float64 for a box without float32 points) before it counts.  It never proves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from certify.budget import Budget
from certify.engines.base import Capabilities, Support
from certify.options import from_mapping
from certify.problem import Problem
from certify.spec_matrix import SpecMatrix
from certify.verdict import Counterexample, Status, Verdict, unknown

#: The smallest step radius, relative to the box, before the local search restarts wide.
MIN_RADIUS = 1e-4


@dataclass(frozen=True, slots=True)
class SampleOptions:
    """``batch`` points per round; ``local_share`` of them around the best point so far."""

    batch: int = 32
    local_share: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch < 1 or not 0.0 <= self.local_share <= 1.0:
            raise ValueError("sample: batch must be positive and local_share in [0, 1]")


class SampleEngine:
    name = "sample"
    capabilities = Capabilities(proves=False, falsifies=True, complete=False, ops=frozenset({"input", "opaque"}))

    def __init__(self, options: SampleOptions) -> None:
        self.options = options

    def available(self) -> Support:
        return Support(True)

    def complete_for(self, problem: Problem) -> bool:
        return False

    def supports(self, problem: Problem) -> Support:
        if not problem.network.is_opaque:
            return Support(False, "sample is for models certify could not convert (fuzz searches the others)")
        return Support(True)

    def check(self, problem: Problem, budget: Budget) -> Verdict:
        search = _Search(problem, self.options)
        while not budget.expired:
            cex = search.round()
            if cex is not None:
                return Verdict(Status.VIOLATED, engine=self.name, counterexample=cex, stats={"samples": search.count})
        reason = next(n.attrs.get("reason", "") for n in problem.network.nodes if n.op.value == "opaque")
        return unknown(self.name, f"no counterexample in {search.count} samples run in onnxruntime (only a search "
                       f"applies: {reason})", samples=search.count)


class _Search:
    """The state of one search: the best point so far and the local step radius."""

    def __init__(self, problem: Problem, options: SampleOptions) -> None:
        self.problem, self.options = problem, options
        self.spec = SpecMatrix.of(problem)
        self.lo = np.asarray(problem.box.lower, np.float64).reshape(-1)
        self.hi = np.asarray(problem.box.upper, np.float64).reshape(-1)
        self.rng = np.random.default_rng(options.seed)
        self.best_x: np.ndarray | None = None
        self.best = math.inf
        self.radius = 0.25
        self.count = 0

    def _points(self) -> np.ndarray:
        n, width = self.lo.size, self.hi - self.lo
        if self.count == 0:  # the centre, both corners, random corners
            corners = np.where(self.rng.random((max(1, self.options.batch - 3), n)) < 0.5, self.lo, self.hi)
            return np.vstack([(self.lo + self.hi) / 2, self.lo, self.hi, corners])
        local = int(self.options.batch * self.options.local_share) if self.best_x is not None else 0
        uniform = self.lo + width * self.rng.random((self.options.batch - local, n))
        if not local:
            return uniform
        steps = self.best_x + self.radius * width * self.rng.standard_normal((local, n))
        return np.vstack([uniform, np.clip(steps, self.lo, self.hi)])

    def round(self) -> Counterexample | None:
        xs = self._points()
        net = self.problem.network
        with torch.no_grad():
            ys = net.forward(torch.as_tensor(xs).reshape(-1, *net.input_shape)).reshape(xs.shape[0], -1)
        self.count += xs.shape[0]
        violation = self.spec.violation(ys).numpy()
        k = int(np.argmin(violation))
        if violation[k] <= 0:
            return Counterexample(xs[k].reshape(self.problem.box.shape), ys[k].numpy())
        if violation[k] < self.best:
            self.best, self.best_x = float(violation[k]), xs[k]
        else:
            self.radius = self.radius / 2 if self.radius > MIN_RADIUS else 0.25
        return None


def make_engine(options: Mapping[str, Any]) -> SampleEngine:
    return SampleEngine(from_mapping(SampleOptions, options, "sample"))
