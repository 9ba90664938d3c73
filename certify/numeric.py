"""The numeric range inside which a proof means what it says.

Bounds are computed in float64 as if the network ran on real numbers, with a small relative
tolerance for the float32 rounding of the model onnxruntime runs (see
:data:`certify.engines.spec_matrix.PROOF_TOLERANCE`).  That reading holds only while every
value the float32 model computes stays far from float32's overflow (3.4e38): past it the
model yields ``inf`` or ``NaN`` where the real-valued network has a finite value, and a
bound about the real network says nothing about the model (a box near 3e38 once "held" while
every point of it violated in onnxruntime).

:func:`proof_range` bounds, by interval arithmetic in float64 over the problem's box, every
node's value and every partial sum inside its linear op, and the unsafe rows ``A y - b``.  A
problem whose values may exceed :data:`SAFE_MAGNITUDE` (or are not finite) cannot be proved:
:func:`vouch` turns such a HOLDS into UNKNOWN with the reason.  Falsification is unaffected:
a counterexample still has to replay in onnxruntime.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from certify.bounds import Bounds, ibp, input_bounds
from certify.network import Network, Node, Op, pad_input
from certify.problem import Problem
from certify.verdict import Status, Verdict

log = logging.getLogger(__name__)

#: The largest magnitude a proof lets any value reach: float32's overflow (3.4e38) is 8 orders
#: of magnitude above, so even partial sums of 1e8 such terms stay finite in float32.
SAFE_MAGNITUDE = 1e30
#: The largest magnitude handed to an LP or MILP solver: HiGHS reads 1e20 and above as infinite
#: (a box bound of 3e38 once made a domain "infeasible", so "empty", so proved) and its
#: tolerances lose their meaning well before that.  A model with larger numbers is not solved.
LP_MAGNITUDE = 1e12


@dataclass(frozen=True, slots=True)
class NumericRange:
    """The largest magnitude found (``inf`` for a non-finite value) and where."""

    largest: float
    where: str

    @property
    def ok(self) -> bool:
        return self.largest <= SAFE_MAGNITUDE

    @property
    def reason(self) -> str:
        size = "non-finite values" if not math.isfinite(self.largest) else f"values up to {self.largest:.3g}"
        return (f"no proof attempted: {size} at {self.where} (limit {SAFE_MAGNITUDE:.0e}); float32 "
                f"arithmetic of the model would overflow where the bounds assume real numbers")


def _largest(t: torch.Tensor) -> float:
    if t.numel() == 0:
        return 0.0
    a = t.abs()
    if not bool(torch.isfinite(a).all()):
        return math.inf
    return float(a.max())


def _partial_sums(node: Node, mag: torch.Tensor) -> torch.Tensor:
    """A bound on the magnitude of every partial sum inside ``node`` for inputs of magnitude at
    most ``mag`` (``[1, *in_shape]``): ``|x| @ |W| + |b|`` for the linear ops."""
    bias = node.params.get("bias")
    if node.op is Op.LINEAR:
        out = torch.matmul(mag, node.params["weight"].abs())
    elif node.op is Op.CONV:
        a = node.attrs
        out = F.conv2d(pad_input(mag, a["padding"]), node.params["weight"].abs(), None, stride=a["stride"],
                       dilation=a["dilation"], groups=a["groups"])
        bias = None if bias is None else bias.view(-1, 1, 1)
    elif node.op is Op.AFFINE:
        out = mag * node.params["scale"].abs()
        bias = node.params["shift"]
    else:
        return mag.new_zeros(1)
    return out if bias is None else out + bias.abs()


def network_range(network: Network, lower: np.ndarray, upper: np.ndarray) -> NumericRange:
    """The largest magnitude any value of ``network`` (every node, every partial sum of a
    linear op, every parameter) may take on the box ``lower <= x <= upper``."""
    return _scan(network, lower, upper)[0]


def proof_range(problem: Problem) -> NumericRange:
    """:func:`network_range` of the problem's network and box, and of its unsafe rows
    ``|A| |y| + |b|`` on the interval bounds of the output."""
    box = problem.box
    found, out = _scan(problem.network, np.asarray(box.lower, np.float64), np.asarray(box.upper, np.float64))
    if out is None:
        return found
    y = np.maximum(np.abs(out.lower.numpy()), np.abs(out.upper.numpy())).reshape(-1)
    with np.errstate(all="ignore"):
        for k, hs in enumerate(problem.unsafe):
            rows = np.abs(hs.A) @ y + np.abs(hs.b)
            largest = float(np.max(rows, initial=0.0))
            if not np.all(np.isfinite(hs.A)) or not np.all(np.isfinite(rows)):
                largest = math.inf
            if largest > found.largest:
                found = NumericRange(largest, f"unsafe disjunct {k + 1}")
    return found


def _scan(network: Network, lower: np.ndarray, upper: np.ndarray) -> tuple[NumericRange, Bounds | None]:
    """The range found and the output's interval bounds (None when the scan stopped early)."""
    found = NumericRange(_largest(torch.as_tensor(np.concatenate([lower.ravel(), upper.ravel()]))),
                         "the input box")
    if not found.ok:
        return found, None
    net = network.to(dtype=torch.float64, device="cpu")
    for node in net.nodes:
        for key, p in node.params.items():
            if _largest(p) > found.largest:
                found = NumericRange(_largest(p), f"parameter {key!r} of node {node.name!r}")
    if not found.ok:
        return found, None
    with torch.no_grad():
        bounds = ibp(net, input_bounds(lower[None], upper[None]))
        for node in net.nodes[1:]:
            b = bounds[node.name]
            largest = max(_largest(b.lower), _largest(b.upper))
            if node.op in (Op.LINEAR, Op.CONV, Op.AFFINE):
                src = bounds[node.inputs[0]]
                largest = max(largest, _largest(_partial_sums(node, torch.maximum(src.lower.abs(), src.upper.abs()))))
            if largest > found.largest:
                found = NumericRange(largest, f"node {node.name!r}")
            if not found.ok:
                return found, None
    return found, bounds[net.output]


def vouch(problem: Problem, verdict: Verdict) -> Verdict:
    """``verdict``, unless it is a HOLDS on a problem outside the safe numeric range: then an
    UNKNOWN with the reason (see the module docstring)."""
    if verdict.status is not Status.HOLDS:
        return verdict
    found = proof_range(problem)
    if found.ok:
        return verdict
    log.warning("%s: %s held by its bounds, withdrawn: %s", problem.name or "problem", verdict.engine,
                found.reason)
    return replace(verdict, status=Status.UNKNOWN, reason=found.reason, certificate=None, proof=None)


def guarded(check: Callable[[Any, Problem, Any], Verdict]) -> Callable[[Any, Problem, Any], Verdict]:
    """Decorates an engine's ``check(problem, budget)`` so that its HOLDS passes :func:`vouch`."""

    @functools.wraps(check)
    def checked(self: Any, problem: Problem, budget: Any) -> Verdict:
        return vouch(problem, check(self, problem, budget))

    return checked
