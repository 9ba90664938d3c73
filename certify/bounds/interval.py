"""Interval bound propagation: one rule per op (:data:`IBP_RULES`), and the interval value of a
linear objective.

Shapes: a batch of ``B`` input boxes; a node of per-sample shape ``s`` has bounds ``[B, *s]``.
``IBP_RULES[op](node, input_bounds) -> Bounds``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from certify.network import FORWARD, Network, Node, Op, pad_input
from certify.relax import RANGES, product_range, softmax_bounds

__all__ = ["IBP_RULES", "Bounds", "ibp", "ibp_objective", "input_bounds"]


@dataclass(frozen=True, slots=True)
class Bounds:
    """Elementwise bounds ``lower <= v <= upper`` of one node: tensors ``[B, *shape]``."""

    lower: torch.Tensor
    upper: torch.Tensor

    def intersect(self, other: Bounds) -> Bounds:
        """Elementwise the tighter of both; a NaN on one side (a bound method that broke down,
        e.g. ``inf - inf``) yields the other side's value (``fmax`` / ``fmin``)."""
        return Bounds(torch.fmax(self.lower, other.lower), torch.fmin(self.upper, other.upper))

    @property
    def width(self) -> torch.Tensor:
        return self.upper - self.lower

    def select(self, index: torch.Tensor | slice) -> Bounds:
        return Bounds(self.lower[index], self.upper[index])


def input_bounds(lower: np.ndarray | torch.Tensor, upper: np.ndarray | torch.Tensor,
                 dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> Bounds:
    """Bounds for a batch of boxes; a single box (input shape) gets a batch axis of 1."""
    lo = torch.tensor(np.asarray(lower), dtype=dtype, device=device)
    hi = torch.tensor(np.asarray(upper), dtype=dtype, device=device)
    return Bounds(lo, hi)


def _ibp_monotone(node: Node, b: list[Bounds]) -> Bounds:
    f = FORWARD[node.op]
    return Bounds(f(node, [b[0].lower]), f(node, [b[0].upper]))


def _ibp_linear(node: Node, b: list[Bounds]) -> Bounds:
    w = node.params["weight"]
    mid = (b[0].upper + b[0].lower) / 2
    rad = (b[0].upper - b[0].lower) / 2
    c = FORWARD[Op.LINEAR](node, [mid])
    r = torch.matmul(rad, w.abs())
    return Bounds(c - r, c + r)


def _ibp_conv(node: Node, b: list[Bounds]) -> Bounds:
    a = node.attrs
    mid = (b[0].upper + b[0].lower) / 2
    rad = (b[0].upper - b[0].lower) / 2
    c = FORWARD[Op.CONV](node, [mid])
    r = F.conv2d(pad_input(rad, a["padding"]), node.params["weight"].abs(), None,
                 stride=a["stride"], dilation=a["dilation"], groups=a["groups"])
    return Bounds(c - r, c + r)


def _ibp_affine(node: Node, b: list[Bounds]) -> Bounds:
    s, t = node.params["scale"], node.params["shift"]
    lo, hi = b[0].lower * s, b[0].upper * s
    return Bounds(torch.minimum(lo, hi) + t, torch.maximum(lo, hi) + t)


def _ibp_shape_op(node: Node, b: list[Bounds]) -> Bounds:
    f = FORWARD[node.op]
    return Bounds(f(node, [x.lower for x in b]), f(node, [x.upper for x in b]))


def _ibp_range(node: Node, b: list[Bounds]) -> Bounds:
    """An elementwise op's exact range on each interval (:data:`certify.relax.RANGES`)."""
    lo, hi = RANGES[node.op](b[0].lower, b[0].upper, node.attrs)
    return Bounds(lo, hi)


def _ibp_softmax(node: Node, b: list[Bounds]) -> Bounds:
    return Bounds(*softmax_bounds(b[0].lower, b[0].upper, node.attrs["axis"] + 1))


def _ibp_mul(node: Node, b: list[Bounds]) -> Bounds:
    return Bounds(*product_range(b[0].lower, b[0].upper, b[1].lower, b[1].upper))


def _ibp_matmul(node: Node, b: list[Bounds]) -> Bounds:
    """Interval matrix product by centres and radii: ``|X Y - Xc Yc| <= |Xc| Yr + Xr |Yc| + Xr Yr``."""
    xc, xr = (b[0].upper + b[0].lower) / 2, (b[0].upper - b[0].lower) / 2
    yc, yr = (b[1].upper + b[1].lower) / 2, (b[1].upper - b[1].lower) / 2
    c = torch.matmul(xc, yc)
    r = torch.matmul(xc.abs(), yr) + torch.matmul(xr, yc.abs()) + torch.matmul(xr, yr)
    return Bounds(c - r, c + r)


def _ibp_conv_transpose(node: Node, b: list[Bounds]) -> Bounds:
    mid = (b[0].upper + b[0].lower) / 2
    rad = (b[0].upper - b[0].lower) / 2
    c = FORWARD[Op.CONV_TRANSPOSE](node, [mid])
    r = FORWARD[Op.CONV_TRANSPOSE](replace(node, params={"weight": node.params["weight"].abs()}), [rad])
    return Bounds(c - r, c + r)


IBP_RULES: dict[Op, Callable[[Node, list[Bounds]], Bounds]] = {
    Op.LINEAR: _ibp_linear,
    Op.CONV: _ibp_conv,
    Op.AFFINE: _ibp_affine,
    Op.ADD: lambda n, b: Bounds(b[0].lower + b[1].lower, b[0].upper + b[1].upper),
    Op.SUB: lambda n, b: Bounds(b[0].lower - b[1].upper, b[0].upper - b[1].lower),
    Op.RELU: _ibp_monotone,
    Op.SIGMOID: _ibp_monotone,
    Op.TANH: _ibp_monotone,
    Op.MAXPOOL: _ibp_monotone,
    Op.AVGPOOL: _ibp_monotone,  # non-negative weights: monotone
    Op.RESHAPE: _ibp_shape_op,
    Op.TRANSPOSE: _ibp_shape_op,
    Op.CONCAT: _ibp_shape_op,
    Op.SLICE: _ibp_shape_op,
    Op.SIGN: _ibp_range,
    Op.SIN: _ibp_range,
    Op.COS: _ibp_range,
    Op.FLOOR: _ibp_range,
    Op.EXP: _ibp_range,
    Op.RECIPROCAL: _ibp_range,
    Op.LEAKY_RELU: _ibp_range,
    Op.POW: _ibp_range,
    Op.SOFTMAX: _ibp_softmax,
    Op.MUL: _ibp_mul,
    Op.MATMUL: _ibp_matmul,
    Op.CONV_TRANSPOSE: _ibp_conv_transpose,
    Op.UPSAMPLE: _ibp_shape_op,  # selections and sums of the input: monotone
    Op.PAD: _ibp_shape_op,
    Op.GATHER: _ibp_shape_op,
    Op.REDUCE_SUM: _ibp_shape_op,
    Op.EXPAND: _ibp_shape_op,
    Op.CONSTANT: _ibp_shape_op,
}


def ibp(network: Network, box: Bounds, fixed: Mapping[str, Bounds] | None = None) -> dict[str, Bounds]:
    """Interval bounds of every node; ``fixed`` bounds are intersected in where given."""
    out: dict[str, Bounds] = {network.input.name: box}
    for node in network.nodes[1:]:
        b = IBP_RULES[node.op](node, [out[i] for i in node.inputs])
        if fixed and node.name in fixed:
            b = b.intersect(fixed[node.name])
        out[node.name] = b
    return out


def ibp_objective(network: Network, bounds: Mapping[str, Bounds], c: torch.Tensor) -> torch.Tensor:
    """Interval lower bound of ``c . net(x)``: ``[B, S]``."""
    out = bounds[network.output]
    lo = out.lower.flatten(1).unsqueeze(1)
    hi = out.upper.flatten(1).unsqueeze(1)
    return (c.clamp(min=0) * lo + c.clamp(max=0) * hi).sum(-1)
