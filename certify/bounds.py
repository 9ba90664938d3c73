"""Bound propagation: interval (IBP), CROWN and alpha-CROWN, each one table keyed by op.

Shapes: a batch of ``B`` input boxes; a node of per-sample shape ``s`` has bounds ``[B, *s]``.
A linear objective over a node is a coefficient tensor ``C: [B, S, *s]`` (``S`` rows).

* ``IBP_RULES[op](node, input_bounds) -> Bounds``: interval arithmetic.
* ``CROWN_RULES[op](node, A, ctx) -> (A per input, bias)``: the backward step of CROWN.
  Given ``A: [B, S, *node.shape]``, it returns coefficients on the node's inputs and a constant
  ``[B, S]`` such that ``A . node >= sum_i A_i . input_i + bias`` holds on the current bounds.
  Only *lower* bounds are propagated; an upper bound is minus the lower bound of ``-A``.

Nonlinear rules take their lines from :mod:`certify.relax` (the relaxations are shared data).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from certify.budget import Budget
from certify.network import ACTIVATIONS, FORWARD, Network, Node, Op, pad_input
from certify.relax import (INEXACT, RANGES, RELAXATIONS, bilinear_planes, product_range, relu_default_alpha,
                           relu_relaxation, softmax_bounds)


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


# ---------------------------------------------------------------------------------------
# IBP
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# CROWN backward rules
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BackwardContext:
    """What a backward rule may read: the bounds of every node computed so far and alphas.

    ``alphas[relu_node_name]`` is a lower-slope tensor ``[B, S, *shape]`` (alpha-CROWN), or the
    rule falls back to CROWN's adaptive choice.
    """

    bounds: Mapping[str, Bounds]
    alphas: Mapping[str, torch.Tensor] = field(default_factory=dict)


BackwardRule = Callable[[Node, torch.Tensor, BackwardContext], tuple[list[torch.Tensor], torch.Tensor]]


def _sum_rows(t: torch.Tensor) -> torch.Tensor:
    """Sum every axis after the first two: ``[B, S, ...] -> [B, S]``."""
    return t.flatten(2).sum(-1)


def _zero_bias(a: torch.Tensor) -> torch.Tensor:
    return a.new_zeros(a.shape[:2])


def _back_linear(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    w = node.params["weight"]
    a_in = torch.matmul(a, w.transpose(0, 1))
    bias = node.params.get("bias")
    if bias is None:
        return [a_in], _zero_bias(a)
    if a.dim() == 3:  # [B, S, n_out] . [n_out]
        return [a_in], torch.matmul(a, bias)
    return [a_in], _sum_rows(a * bias)


def _back_conv(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    at = node.attrs
    (c_in, h, w_) = ctx.bounds[node.inputs[0]].lower.shape[1:]
    top, left, bottom, right = at["padding"]
    hp, wp = h + top + bottom, w_ + left + right
    bsz, rows = a.shape[:2]
    weight = node.params["weight"]
    kh, kw = weight.shape[2:]
    (sh, sw), (dh, dw) = at["stride"], at["dilation"]
    ho, wo = a.shape[-2:]
    out_pad = (hp - ((ho - 1) * sh + dh * (kh - 1) + 1), wp - ((wo - 1) * sw + dw * (kw - 1) + 1))
    flat = a.reshape(bsz * rows, *a.shape[2:])
    back = F.conv_transpose2d(flat, weight, None, stride=at["stride"], output_padding=out_pad,
                              groups=at["groups"], dilation=at["dilation"])
    back = back[:, :, top:top + h, left:left + w_]
    a_in = back.reshape(bsz, rows, c_in, h, w_)
    bias = node.params.get("bias")
    b = _sum_rows(a * bias.view(-1, 1, 1)) if bias is not None else _zero_bias(a)
    return [a_in], b


def _back_vjp(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Transpose of a linear single-input op by a vector-Jacobian product (e.g. avgpool)."""
    in_shape = ctx.bounds[node.inputs[0]].lower.shape[1:]
    bsz, rows = a.shape[:2]
    with torch.enable_grad():
        x = torch.zeros(bsz * rows, *in_shape, dtype=a.dtype, device=a.device, requires_grad=True)
        y = FORWARD[node.op](node, [x])
        (g,) = torch.autograd.grad(y, x, a.reshape(bsz * rows, *a.shape[2:]), create_graph=a.requires_grad)
    return [g.reshape(bsz, rows, *in_shape)], _zero_bias(a)


def _back_affine(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    return [a * node.params["scale"]], _sum_rows(a * node.params["shift"])


def _back_activation(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    pre = ctx.bounds[node.inputs[0]]
    l, u = pre.lower.unsqueeze(1), pre.upper.unsqueeze(1)
    if node.op is Op.RELU:
        alpha = ctx.alphas.get(node.name)
        r = relu_relaxation(l, u, alpha if alpha is not None else relu_default_alpha(l, u))
        # ReLU's lower line has no intercept: A_in = A * ls + A- * (us - ls), bias = A- . ub.
        neg = a.clamp(max=0)
        a_in = torch.addcmul(a * r.lower_slope, neg, r.upper_slope - r.lower_slope)
        ub = r.upper_bias.expand(a.shape[0], 1, *a.shape[2:]).flatten(2)  # [B, 1, n]
        bias = torch.bmm(neg.flatten(2), ub.transpose(1, 2)).squeeze(2)
        return [a_in], bias
    r = RELAXATIONS[node.op](l, u, node.attrs)
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    a_in = pos * r.lower_slope + neg * r.upper_slope
    bias = _sum_rows(_times(pos, r.lower_bias) + _times(neg, r.upper_bias))
    return [a_in], bias


def _times(coef: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``coef * value`` with ``0 * inf = 0`` (a line with an infinite intercept constrains nothing,
    and a zero coefficient does not use it)."""
    return torch.where(coef == 0, torch.zeros_like(coef), coef * value)


def _back_softmax(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Softmax by its constant lines (:func:`certify.relax.softmax_bounds`)."""
    pre = ctx.bounds[node.inputs[0]]
    lo, hi = softmax_bounds(pre.lower, pre.upper, node.attrs["axis"] + 1)
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    bias = _sum_rows(pos * lo.unsqueeze(1) + neg * hi.unsqueeze(1))
    return [torch.zeros_like(a)], bias


def _back_mul(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``x * y`` by McCormick's planes: the lower plane for positive coefficients, the upper
    one for negative ones."""
    bx, by = ctx.bounds[node.inputs[0]], ctx.bounds[node.inputs[1]]
    low, high = bilinear_planes(*(t.unsqueeze(1) for t in (bx.lower, bx.upper, by.lower, by.upper)))
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    return [pos * low.a + neg * high.a, pos * low.b + neg * high.b], _sum_rows(pos * low.c + neg * high.c)


def _back_matmul(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``Z = X @ Y``: each term ``X_il Y_lj`` of ``Z_ij`` by McCormick's planes (lower for
    ``A_ij >= 0``, upper otherwise), summed: ``A_X = A+ Ly^T + A- Uy^T``, ``A_Y = Lx^T A`` and
    the constant ``-<A+, Lx Ly> - <A-, Lx Uy>``."""
    bx, by = ctx.bounds[node.inputs[0]], ctx.bounds[node.inputs[1]]
    lx, ly, uy = bx.lower.unsqueeze(1), by.lower.unsqueeze(1), by.upper.unsqueeze(1)
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    a_x = torch.matmul(pos, ly.transpose(-1, -2)) + torch.matmul(neg, uy.transpose(-1, -2))
    a_y = torch.matmul(lx.transpose(-1, -2), a)
    bias = -_sum_rows(pos * torch.matmul(lx, ly)) - _sum_rows(neg * torch.matmul(lx, uy))
    return [a_x, a_y], bias


def _back_affine_map(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Any single-input affine op ``f(x) = L x + f(0)``: ``L^T A`` by a vector-Jacobian product,
    and the constant ``<A, f(0)>`` (transposed convolution, upsampling)."""
    in_shape = ctx.bounds[node.inputs[0]].lower.shape[1:]
    bsz, rows = a.shape[:2]
    flat = a.reshape(bsz * rows, *a.shape[2:])
    with torch.enable_grad():
        x = torch.zeros(bsz * rows, *in_shape, dtype=a.dtype, device=a.device, requires_grad=True)
        y = FORWARD[node.op](node, [x])
        (g,) = torch.autograd.grad(y, x, flat, create_graph=a.requires_grad)
    with torch.no_grad():
        offset = FORWARD[node.op](node, [torch.zeros(1, *in_shape, dtype=a.dtype, device=a.device)])
    return [g.reshape(bsz, rows, *in_shape)], _sum_rows(a * offset.unsqueeze(1))


def _back_pad(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    index = [slice(None), slice(None)]
    index += [slice(before, a.shape[k + 2] - after) for k, (before, after) in enumerate(node.attrs["pads"])]
    inner = a[tuple(index)]
    value = float(node.attrs["value"])
    bias = value * (_sum_rows(a) - _sum_rows(inner)) if value else _zero_bias(a)
    return [inner], bias


def _back_gather(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    in_shape = ctx.bounds[node.inputs[0]].lower.shape[1:]
    index = torch.as_tensor(node.attrs["indices"], dtype=torch.long, device=a.device)
    full = a.new_zeros(*a.shape[:2], *in_shape)
    return [full.index_add(node.attrs["axis"] + 2, index, a)], _zero_bias(a)


def _back_reduce_sum(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    in_shape = ctx.bounds[node.inputs[0]].lower.shape[1:]
    if not node.attrs["keepdims"]:
        for axis in sorted(node.attrs["axes"]):
            a = a.unsqueeze(axis + 2)
    return [a.expand(*a.shape[:2], *in_shape)], _zero_bias(a)


def _back_expand(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    in_shape = ctx.bounds[node.inputs[0]].lower.shape[1:]
    dims = tuple(k + 2 for k, (i, o) in enumerate(zip(in_shape, node.shape)) if i != o)
    return [a.sum(dim=dims, keepdim=True) if dims else a], _zero_bias(a)


def _back_constant(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    in_shape = ctx.bounds[node.inputs[0]].lower.shape[1:]
    value = node.params["value"].to(a.dtype)
    return [a.new_zeros(*a.shape[:2], *in_shape)], _sum_rows(a * value)


def _windows(x: torch.Tensor, node: Node, fill: float) -> torch.Tensor:
    """Pooling windows of ``x: [N, C, H, W]`` as ``[N, C, k*k, L]``."""
    at = node.attrs
    xp = pad_input(x, at["padding"], value=fill)
    n, c = xp.shape[:2]
    cols = F.unfold(xp, at["kernel"], stride=at["stride"])  # [N, C*k*k, L]
    return cols.reshape(n, c, -1, cols.shape[-1])


def _back_maxpool(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Max over a window: below, the element with the largest lower bound; above, the constant
    max of the upper bounds, or that element itself when it dominates the window."""
    at = node.attrs
    pre = ctx.bounds[node.inputs[0]]
    c, h, w = pre.lower.shape[1:]
    lw = _windows(pre.lower, node, -math.inf)  # [B, C, K, L]
    uw = _windows(pre.upper, node, -math.inf)
    best_lower, idx = lw.max(dim=2)  # [B, C, L]
    top_upper = uw.max(dim=2).values
    # Second-largest upper bound among the other window elements decides dominance.
    others_upper = uw.scatter(2, idx.unsqueeze(2), -math.inf).max(dim=2).values
    dominant = best_lower >= others_upper
    bsz, rows = a.shape[:2]
    a_flat = a.reshape(bsz, rows, c, -1)  # [B, S, C, L]
    pos, neg = a_flat.clamp(min=0), a_flat.clamp(max=0)
    # Lower line for the max: x_idx (coefficient 1). Upper line: x_idx if dominant, else top_upper.
    coef = pos + torch.where(dominant.unsqueeze(1), neg, torch.zeros_like(neg))
    const = torch.where(dominant.unsqueeze(1), torch.zeros_like(neg), neg * top_upper.unsqueeze(1))
    k = lw.shape[2]
    onehot = F.one_hot(idx, k).to(a.dtype).permute(0, 1, 3, 2)  # [B, C, K, L]
    cols = coef.unsqueeze(3) * onehot.unsqueeze(1)  # [B, S, C, K, L]
    top, left, bottom, right = at["padding"]
    hp, wp = h + top + bottom, w + left + right
    folded = F.fold(cols.reshape(bsz * rows, c * k, -1), (hp, wp), at["kernel"], stride=at["stride"])
    a_in = folded[:, :, top:top + h, left:left + w].reshape(bsz, rows, c, h, w)
    return [a_in], const.flatten(2).sum(-1)


def _back_reshape(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    in_shape = ctx.bounds[node.inputs[0]].lower.shape[1:]
    return [a.reshape(*a.shape[:2], *in_shape)], _zero_bias(a)


def _back_transpose(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    perm = node.attrs["perm"]
    inverse = [perm.index(i) for i in range(len(perm))]
    return [a.permute(0, 1, *(p + 2 for p in inverse))], _zero_bias(a)


def _back_concat(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    axis = node.attrs["axis"] + 2
    sizes = [ctx.bounds[i].lower.shape[node.attrs["axis"] + 1] for i in node.inputs]
    return list(torch.split(a, sizes, dim=axis)), _zero_bias(a)


def _back_slice(node: Node, a: torch.Tensor, ctx: BackwardContext) -> tuple[list[torch.Tensor], torch.Tensor]:
    at = node.attrs
    in_shape = ctx.bounds[node.inputs[0]].lower.shape[1:]
    full = a.new_zeros(*a.shape[:2], *in_shape)
    index = [slice(None)] * full.dim()
    index[at["axis"] + 2] = slice(at["start"], at["stop"])
    full[tuple(index)] = a
    return [full], _zero_bias(a)


CROWN_RULES: dict[Op, BackwardRule] = {
    Op.LINEAR: _back_linear,
    Op.CONV: _back_conv,
    Op.AFFINE: _back_affine,
    Op.ADD: lambda n, a, ctx: ([a, a], _zero_bias(a)),
    Op.SUB: lambda n, a, ctx: ([a, -a], _zero_bias(a)),
    Op.RELU: _back_activation,
    Op.SIGMOID: _back_activation,
    Op.TANH: _back_activation,
    Op.MAXPOOL: _back_maxpool,
    Op.AVGPOOL: _back_vjp,
    Op.RESHAPE: _back_reshape,
    Op.TRANSPOSE: _back_transpose,
    Op.CONCAT: _back_concat,
    Op.SLICE: _back_slice,
    Op.SIGN: _back_activation,
    Op.SIN: _back_activation,
    Op.COS: _back_activation,
    Op.FLOOR: _back_activation,
    Op.EXP: _back_activation,
    Op.RECIPROCAL: _back_activation,
    Op.LEAKY_RELU: _back_activation,
    Op.POW: _back_activation,
    Op.SOFTMAX: _back_softmax,
    Op.MUL: _back_mul,
    Op.MATMUL: _back_matmul,
    Op.CONV_TRANSPOSE: _back_affine_map,
    Op.UPSAMPLE: _back_affine_map,
    Op.PAD: _back_pad,
    Op.GATHER: _back_gather,
    Op.REDUCE_SUM: _back_reduce_sum,
    Op.EXPAND: _back_expand,
    Op.CONSTANT: _back_constant,
}

#: Ops whose bounds CROWN needs before it can go backward through their users.
RELAXED_OPS: frozenset[Op] = frozenset(ACTIVATIONS | {Op.MAXPOOL, Op.SOFTMAX, Op.MUL, Op.MATMUL})


@dataclass(frozen=True, slots=True)
class LinearBound:
    """``A . x + bias`` lower-bounds the objective rows on the box: ``A: [B, S, *in]``, ``bias: [B, S]``.

    ``lower`` is its minimum over the box ``[B, S]``.
    """

    A: torch.Tensor
    bias: torch.Tensor
    lower: torch.Tensor


def backward(network: Network, target: str, c: torch.Tensor, ctx: BackwardContext) -> LinearBound:
    """Lower-bound ``c . value(target)`` over the input box in ``ctx.bounds``.

    ``c: [B, S, *target.shape]``.
    """
    index = {n.name: k for k, n in enumerate(network.nodes)}
    acc: dict[str, torch.Tensor] = {target: c}
    bias = c.new_zeros(c.shape[:2])
    for node in reversed(network.nodes[1:index[target] + 1]):
        a = acc.pop(node.name, None)
        if a is None:
            continue
        a_ins, b = CROWN_RULES[node.op](node, a, ctx)
        bias = bias + b
        for name, a_in in zip(node.inputs, a_ins):
            acc[name] = acc[name] + a_in if name in acc else a_in
    box = ctx.bounds[network.input.name]
    a_x = acc.get(network.input.name)
    if a_x is None:
        a_x = c.new_zeros(*c.shape[:2], *box.lower.shape[1:])
    lo = box.lower.unsqueeze(1)
    hi = box.upper.unsqueeze(1)
    lower = _sum_rows(a_x.clamp(min=0) * lo + a_x.clamp(max=0) * hi) + bias
    return LinearBound(a_x, bias, lower)


def crown_bounds(network: Network, box: Bounds, fixed: Mapping[str, Bounds] | None = None,
                 method: str = "crown", max_rows: int = 4096, forward_filter: bool | None = None,
                 budget: Budget | None = None) -> dict[str, Bounds]:
    """Bounds of every node: IBP everywhere, tightened by CROWN at every relaxed op's input.

    ``method`` is ``"ibp"``, ``"forward"`` (forward linear bounds, no CROWN) or ``"crown"``;
    ``fixed`` bounds (e.g. ReLU splits) are intersected in.
    For ReLU inputs only the neurons that are unstable *in a given domain* are refined (a stable
    ReLU's relaxation is exact whatever its bounds), each domain bounding its own rows.  With
    ``forward_filter`` (default: inputs of at most 64 values) the cheap forward linear bounds
    tighten IBP first, so fewer neurons look unstable.  Rows are bounded in chunks of
    ``max_rows`` (fewer where a chunk's coefficients would pass :data:`CHUNK_BYTES`).  Once the
    ``budget`` has expired the remaining nodes keep their interval bounds (sound, looser).
    """
    if forward_filter is None:
        forward_filter = network.input_size <= 64
    users = network.users()
    node_ops = {n.name: n.op for n in network.nodes}
    needs = {name for name, us in users.items() if any(node_ops[u] in RELAXED_OPS for u in us)}
    needs -= interval_exact(network)
    out: dict[str, Bounds] = {network.input.name: box}
    forms: dict[str, LinearForm] = {}
    d = network.input_size
    if method == "forward" or (forward_filter and method == "crown"):
        bsz = box.lower.shape[0]
        eye = torch.eye(d, dtype=box.lower.dtype, device=box.lower.device)
        eye = eye.reshape(*network.input_shape, d).unsqueeze(0).expand(bsz, *network.input_shape, d)
        zero = box.lower.new_zeros(box.lower.shape)
        forms[network.input.name] = LinearForm(eye, zero, eye, zero)
    for node in network.nodes[1:]:
        ins = [out[i] for i in node.inputs]
        b = IBP_RULES[node.op](node, ins)
        if forms:
            rule = FORWARD_LINEAR_RULES.get(node.op)
            form = rule(node, [forms[i] for i in node.inputs], ins) if rule is not None else _constant_form(b, d)
            b = b.intersect(form.concretize(box))
        if fixed and node.name in fixed:
            b = b.intersect(fixed[node.name])
        if method == "crown" and node.name in needs and not (budget is not None and budget.expired):
            out[node.name] = b
            b = b.intersect(crown_node(network, node, out, {node_ops[u] for u in users[node.name]}, max_rows,
                                       budget=budget))
            if fixed and node.name in fixed:
                b = b.intersect(fixed[node.name])
        out[node.name] = b
        if forms:
            forms[node.name] = form
    return out


#: Ops that move, drop or scale elements one by one without duplicating them: interval bounds
#: stay exact through them.
_TRANSPARENT: frozenset[Op] = frozenset({Op.RESHAPE, Op.TRANSPOSE, Op.SLICE, Op.PAD, Op.AFFINE, Op.CONSTANT})
#: Ops whose outputs combine several inputs linearly: interval bounds are exact after one of them
#: applied to the input box, not after two.
_MIXING: frozenset[Op] = frozenset({Op.LINEAR, Op.CONV, Op.CONV_TRANSPOSE, Op.AVGPOOL, Op.REDUCE_SUM})


def interval_exact(network: Network) -> set[str]:
    """The nodes whose interval bounds are already exact (CROWN cannot tighten them): those that
    are the input box mapped by at most one mixing linear op and element-wise transparent ops."""
    mixes: dict[str, int] = {network.input.name: 0}
    for node in network.nodes[1:]:
        before = [mixes.get(i) for i in node.inputs]
        if any(m is None for m in before):
            continue
        depth = max(m for m in before if m is not None)
        if node.op in _TRANSPARENT and len(node.inputs) == 1:
            mixes[node.name] = depth
        elif node.op in _MIXING and depth == 0:
            mixes[node.name] = 1
    return set(mixes)


def _needed_rows(need: torch.Tensor) -> torch.Tensor:
    """Each domain's needed neurons ``need: [B, n]`` as indices ``[B, R]``, ``R`` the largest
    count; shorter rows are padded by repeating their first needed neuron (still valid rows)."""
    counts = need.sum(1)
    r_max = int(counts.max()) if counts.numel() else 0
    order = torch.argsort(need.to(torch.int8), dim=1, descending=True, stable=True)[:, :r_max]
    valid = torch.arange(r_max, device=need.device).unsqueeze(0) < counts.unsqueeze(1)
    return torch.where(valid, order, order[:, :1].expand(-1, r_max))


#: The largest coefficient tensor one CROWN pass of intermediate bounds may hold (per chunk of
#: rows: rows x the largest node before the bounded one x 8 bytes); conv nets get smaller chunks.
CHUNK_BYTES = 2**28
#: Under a deadline: the rows of a first, measuring chunk, and the seconds later chunks aim at.
PROBE_ROWS = 16
CHUNK_SECONDS = 1.0


def crown_node(network: Network, node: Node, bounds: Mapping[str, Bounds], user_ops: set[Op],
               max_rows: int = 4096,
               slopes: Callable[[torch.Tensor], Mapping[str, torch.Tensor]] | None = None,
               budget: Budget | None = None) -> Bounds:
    """``node``'s bounds in ``bounds``, tightened by CROWN on the bounds of the nodes before it.
    Only the rows that matter are bounded: the neurons where some user's relaxation (``user_ops``)
    depends on the bounds (:data:`certify.relax.INEXACT`: a ReLU's unstable neurons), per domain.
    The ReLU lower
    slopes are CROWN's defaults, or ``slopes(rows)`` for the neurons ``rows: [B, r]`` (lower
    bound rows, then upper bound rows: ``[B, 2r, *shape]`` per ReLU).  Chunks stop once the
    ``budget`` has expired (the rows not reached keep their bounds)."""
    current = bounds[node.name]
    bsz, n = current.lower.shape[0], node.size
    lower = current.lower.flatten(1).clone()
    upper = current.upper.flatten(1).clone()
    need = torch.zeros_like(lower, dtype=torch.bool)  # [B, n]: neurons some user relaxes inexactly
    for op in user_ops:
        inexact = INEXACT.get(op)
        need |= inexact(lower, upper) if inexact is not None else torch.ones_like(need)
    rows = _needed_rows(need)
    r_max = rows.shape[1]
    if r_max == 0:
        return current
    widest = max(n.size for n in network.nodes[:network.nodes.index(node) + 1])
    cap = max(1, min(max_rows, CHUNK_BYTES // (16 * widest * max(1, bsz))))
    # With a deadline and several chunks to go, a small first chunk measures the time per row,
    # so that later chunks take about CHUNK_SECONDS and none starts that cannot end in time.
    chunk = min(cap, PROBE_ROWS) if budget is not None and r_max > cap else cap
    start, per_row = 0, 0.0
    while start < r_max:
        if budget is not None and start and budget.remaining < per_row * min(chunk, r_max - start):
            break
        began = time.monotonic()
        idx = rows[:, start:start + chunk]  # [B, r]
        r = idx.shape[1]
        eye = lower.new_zeros(bsz, r, n).scatter_(2, idx.unsqueeze(2), 1.0)
        c = torch.cat([eye, -eye], dim=1).reshape(bsz, 2 * r, *node.shape)
        ctx = BackwardContext(bounds, {} if slopes is None else slopes(idx))
        res = backward(network, node.name, c, ctx).lower
        lower = lower.scatter_reduce(1, idx, res[:, :r], reduce="amax")
        upper = upper.scatter_reduce(1, idx, -res[:, r:], reduce="amin")
        start += r
        per_row = (time.monotonic() - began) / r
        if budget is not None:
            chunk = max(1, min(cap, int(CHUNK_SECONDS / max(per_row, 1e-9))))
    return Bounds(lower.reshape(current.lower.shape), upper.reshape(current.upper.shape))


# ---------------------------------------------------------------------------------------
# Forward linear bounds: every node bounded by linear functions of the (flattened) input.
# Cheap when the input is low-dimensional (ACAS Xu has 5 inputs): tensors [B, *shape, d].
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LinearForm:
    """``lower_A . x + lower_b <= v <= upper_A . x + upper_b`` for ``x`` in the input box.

    ``*_A: [B, *shape, d]``, ``*_b: [B, *shape]`` with ``d`` the flattened input size.
    """

    lower_A: torch.Tensor
    lower_b: torch.Tensor
    upper_A: torch.Tensor
    upper_b: torch.Tensor

    def concretize(self, box: Bounds) -> Bounds:
        bsz = box.lower.shape[0]
        xl = box.lower.reshape(bsz, *([1] * (self.lower_b.dim() - 1)), -1)
        xu = box.upper.reshape(bsz, *([1] * (self.lower_b.dim() - 1)), -1)
        lo = (self.lower_A.clamp(min=0) * xl + self.lower_A.clamp(max=0) * xu).sum(-1) + self.lower_b
        hi = (self.upper_A.clamp(min=0) * xu + self.upper_A.clamp(max=0) * xl).sum(-1) + self.upper_b
        return Bounds(lo, hi)

    def map(self, f: Callable[[torch.Tensor], torch.Tensor]) -> LinearForm:
        """Apply a shape-only op ``f`` (acting on the per-sample axes of a ``[B, *shape]`` tensor)."""
        def on_a(a: torch.Tensor) -> torch.Tensor:
            moved = a.movedim(-1, 1)  # [B, d, *shape]
            bsz, d = moved.shape[:2]
            out = f(moved.reshape(bsz * d, *moved.shape[2:]))
            return out.reshape(bsz, d, *out.shape[1:]).movedim(1, -1)
        return LinearForm(on_a(self.lower_A), f(self.lower_b), on_a(self.upper_A), f(self.upper_b))


def _constant_form(b: Bounds, d: int) -> LinearForm:
    zeros = b.lower.new_zeros(*b.lower.shape, d)
    return LinearForm(zeros, b.lower, zeros, b.upper)


def _fwd_linear(node: Node, f: list[LinearForm], b: list[Bounds]) -> LinearForm:
    w = node.params["weight"]
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    x = f[0]
    def mm(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:  # [..., n_in, d] x [n_in, n_out]
        return torch.matmul(a.transpose(-1, -2), m).transpose(-1, -2)
    lo_a = mm(x.lower_A, wp) + mm(x.upper_A, wn)
    up_a = mm(x.upper_A, wp) + mm(x.lower_A, wn)
    lo_b = torch.matmul(x.lower_b, wp) + torch.matmul(x.upper_b, wn)
    up_b = torch.matmul(x.upper_b, wp) + torch.matmul(x.lower_b, wn)
    bias = node.params.get("bias")
    if bias is not None:
        lo_b, up_b = lo_b + bias, up_b + bias
    return LinearForm(lo_a, lo_b, up_a, up_b)


def _fwd_weighted(node: Node, f: list[LinearForm], b: list[Bounds]) -> LinearForm:
    """A convolution (or transposed one) of a form: the positive and the negative part of the
    weight each map the form's matching side; the bias enters the intercepts once."""
    w = node.params["weight"]
    apply = FORWARD[node.op]
    pos = replace(node, params={"weight": w.clamp(min=0)})
    neg = replace(node, params={"weight": w.clamp(max=0)})
    x = f[0]

    def on_a(n: Node, a: torch.Tensor) -> torch.Tensor:  # [B, *shape, d] -> [B, *out, d]
        moved = a.movedim(-1, 1)
        bsz, d = moved.shape[:2]
        out = apply(n, [moved.reshape(bsz * d, *moved.shape[2:])])
        return out.reshape(bsz, d, *out.shape[1:]).movedim(1, -1)

    lo_a = on_a(pos, x.lower_A) + on_a(neg, x.upper_A)
    up_a = on_a(pos, x.upper_A) + on_a(neg, x.lower_A)
    lo_b = apply(pos, [x.lower_b]) + apply(neg, [x.upper_b])
    up_b = apply(pos, [x.upper_b]) + apply(neg, [x.lower_b])
    bias = node.params.get("bias")
    if bias is not None:
        shape = (-1,) + (1,) * (lo_b.dim() - 2)
        lo_b, up_b = lo_b + bias.view(shape), up_b + bias.view(shape)
    return LinearForm(lo_a, lo_b, up_a, up_b)


def _fwd_pad(node: Node, f: list[LinearForm], b: list[Bounds]) -> LinearForm:
    """Padding: the coefficients pad with 0, the intercepts with the pad value."""
    zero = replace(node, attrs={**node.attrs, "value": 0.0})
    x = f[0]

    def on_a(a: torch.Tensor) -> torch.Tensor:
        moved = a.movedim(-1, 1)
        bsz, d = moved.shape[:2]
        out = FORWARD[Op.PAD](zero, [moved.reshape(bsz * d, *moved.shape[2:])])
        return out.reshape(bsz, d, *out.shape[1:]).movedim(1, -1)

    pad = FORWARD[Op.PAD]
    return LinearForm(on_a(x.lower_A), pad(node, [x.lower_b]), on_a(x.upper_A), pad(node, [x.upper_b]))


def _fwd_scale(x: LinearForm, scale: torch.Tensor, shift: torch.Tensor) -> LinearForm:
    sp, sn = scale.clamp(min=0), scale.clamp(max=0)
    return LinearForm(sp.unsqueeze(-1) * x.lower_A + sn.unsqueeze(-1) * x.upper_A,
                      sp * x.lower_b + sn * x.upper_b + shift,
                      sp.unsqueeze(-1) * x.upper_A + sn.unsqueeze(-1) * x.lower_A,
                      sp * x.upper_b + sn * x.lower_b + shift)


def _fwd_affine(node: Node, f: list[LinearForm], b: list[Bounds]) -> LinearForm:
    scale = node.params["scale"].expand(node.shape)
    return _fwd_scale(f[0], scale, node.params["shift"].expand(node.shape))


def _fwd_activation(node: Node, f: list[LinearForm], b: list[Bounds]) -> LinearForm:
    r = RELAXATIONS[node.op](b[0].lower, b[0].upper, node.attrs)
    x = f[0]
    lp, ln = r.lower_slope.clamp(min=0), r.lower_slope.clamp(max=0)
    up, un = r.upper_slope.clamp(min=0), r.upper_slope.clamp(max=0)
    return LinearForm(lp.unsqueeze(-1) * x.lower_A + ln.unsqueeze(-1) * x.upper_A,
                      lp * x.lower_b + ln * x.upper_b + r.lower_bias,
                      up.unsqueeze(-1) * x.upper_A + un.unsqueeze(-1) * x.lower_A,
                      up * x.upper_b + un * x.lower_b + r.upper_bias)


def _fwd_add(node: Node, f: list[LinearForm], b: list[Bounds]) -> LinearForm:
    p, q = f
    return LinearForm(p.lower_A + q.lower_A, p.lower_b + q.lower_b, p.upper_A + q.upper_A, p.upper_b + q.upper_b)


def _fwd_sub(node: Node, f: list[LinearForm], b: list[Bounds]) -> LinearForm:
    p, q = f
    return LinearForm(p.lower_A - q.upper_A, p.lower_b - q.upper_b, p.upper_A - q.lower_A, p.upper_b - q.lower_b)


def _fwd_shape_op(node: Node, f: list[LinearForm], b: list[Bounds]) -> LinearForm:
    return f[0].map(lambda t: FORWARD[node.op](node, [t]))


def _fwd_concat(node: Node, f: list[LinearForm], b: list[Bounds]) -> LinearForm:
    axis = node.attrs["axis"] + 1
    return LinearForm(torch.cat([x.lower_A for x in f], axis), torch.cat([x.lower_b for x in f], axis),
                      torch.cat([x.upper_A for x in f], axis), torch.cat([x.upper_b for x in f], axis))


#: Forward linear rules; an op without one falls back to its interval bounds (a constant form).
FORWARD_LINEAR_RULES: dict[Op, Callable[[Node, list[LinearForm], list[Bounds]], LinearForm]] = {
    Op.LINEAR: _fwd_linear,
    Op.AFFINE: _fwd_affine,
    Op.ADD: _fwd_add,
    Op.SUB: _fwd_sub,
    Op.RELU: _fwd_activation,
    Op.SIGMOID: _fwd_activation,
    Op.TANH: _fwd_activation,
    Op.RESHAPE: _fwd_shape_op,
    Op.TRANSPOSE: _fwd_shape_op,
    Op.SLICE: _fwd_shape_op,
    Op.CONCAT: _fwd_concat,
    Op.GATHER: _fwd_shape_op,  # selections, sums and repeats: linear with non-negative weights
    Op.EXPAND: _fwd_shape_op,
    Op.UPSAMPLE: _fwd_shape_op,
    Op.REDUCE_SUM: _fwd_shape_op,
    Op.CONV: _fwd_weighted,
    Op.CONV_TRANSPOSE: _fwd_weighted,
    Op.PAD: _fwd_pad,
    Op.SIGN: _fwd_activation,  # elementwise ops with finite lines
    Op.SIN: _fwd_activation,
    Op.COS: _fwd_activation,
    Op.FLOOR: _fwd_activation,
    Op.EXP: _fwd_activation,
    Op.LEAKY_RELU: _fwd_activation,
    Op.POW: _fwd_activation,
}


def forward_bounds(network: Network, box: Bounds, fixed: Mapping[str, Bounds] | None = None) -> dict[str, Bounds]:
    """Bounds of every node from forward linear bounds, intersected with IBP (and ``fixed``).

    Cost per node is ``O(size * d)`` for ``d`` inputs: the cheap choice for low-dimensional
    inputs, where it is nearly as tight as backward CROWN on small boxes.
    """
    return crown_bounds(network, box, fixed, method="forward")


# ---------------------------------------------------------------------------------------
# Objectives: lower bounds of C . output
# ---------------------------------------------------------------------------------------

def crown_objective(network: Network, bounds: Mapping[str, Bounds], c: torch.Tensor,
                    alphas: Mapping[str, torch.Tensor] | None = None) -> LinearBound:
    """Lower-bound ``c . net(x)`` (``c: [B, S, n_out]``) given every node's bounds."""
    out_shape = network.output_shape
    c = c.reshape(*c.shape[:2], *out_shape)
    return backward(network, network.output, c, BackwardContext(bounds, alphas or {}))


def ibp_objective(network: Network, bounds: Mapping[str, Bounds], c: torch.Tensor) -> torch.Tensor:
    """Interval lower bound of ``c . net(x)``: ``[B, S]``."""
    out = bounds[network.output]
    lo = out.lower.flatten(1).unsqueeze(1)
    hi = out.upper.flatten(1).unsqueeze(1)
    return (c.clamp(min=0) * lo + c.clamp(max=0) * hi).sum(-1)


@dataclass(frozen=True, slots=True)
class AlphaOptions:
    """``shared``: one slope per neuron for all objective rows (one optimization serves every
    output spec); otherwise one per (row, neuron), which is never looser."""

    iterations: int = 30
    lr: float = 0.25
    lr_decay: float = 0.95
    shared: bool = False
    #: Optimize the slopes in this dtype (e.g. float32, about twice as fast on a CPU), then
    #: compute the returned bound once in the bounds' own dtype with the slopes found: any
    #: slope in [0, 1] is sound, so only the final evaluation needs the higher precision.
    search_dtype: torch.dtype | None = None


def adam(params: list[torch.Tensor] | list[dict[str, Any]], lr: float) -> torch.optim.Adam:
    """Adam over ``params`` (tensors, or groups with their own ``lr``), fused into one kernel per
    step where this torch build has that for the params' device (CPU since torch 2.4): on a
    CPU, ten times faster per step than the loop over elementwise ops."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def alpha_crown_objective(network: Network, bounds: Mapping[str, Bounds], c: torch.Tensor,
                          options: AlphaOptions = AlphaOptions(),
                          init: Mapping[str, torch.Tensor] | None = None,
                          stop: Callable[[torch.Tensor], bool] | None = None,
                          budget: Budget | None = None,
                          ) -> tuple[LinearBound, dict[str, torch.Tensor]]:
    """alpha-CROWN on the final objective: ReLU lower slopes optimized by projected gradient
    ascent on the sum of the rows' lower bounds; one alpha per (row, neuron).

    Returns the best bound found per row (never looser than CROWN, which is the starting point)
    and the final alphas (to warm-start children in branch and bound).  ``stop(lower)`` may end
    the optimization early (e.g. once every row is proved), and so does the ``budget``'s deadline.
    """
    if options.search_dtype is not None and options.search_dtype != c.dtype and options.iterations > 0:
        return _alpha_search_cast(network, bounds, c, options, init, stop, budget)
    bsz = c.shape[0]
    rows = 1 if options.shared else c.shape[1]
    relus = [n for n in network.nodes if n.op is Op.RELU]
    alphas: dict[str, torch.Tensor] = {}
    for n in relus:
        pre = bounds[n.inputs[0]]
        if init is not None and n.name in init and init[n.name].shape[:2] == (bsz, rows):
            a0 = init[n.name].detach().clone()
        else:
            a0 = relu_default_alpha(pre.lower, pre.upper).unsqueeze(1).expand(bsz, rows, *n.shape).clone()
        alphas[n.name] = a0.requires_grad_(True)
    with torch.no_grad():
        best = crown_objective(network, bounds, c, alphas)
    if not relus or options.iterations <= 0 or (stop is not None and stop(best.lower)):
        return best, {k: v.detach() for k, v in alphas.items()}
    best_alpha = {k: v.detach().clone() for k, v in alphas.items()}
    opt = adam(list(alphas.values()), lr=options.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, options.lr_decay)
    for _ in range(options.iterations):
        if budget is not None and budget.expired:
            break
        with torch.enable_grad():
            res = crown_objective(network, bounds, c, alphas)
            loss = -res.lower.sum()
            opt.zero_grad()
            loss.backward()
        with torch.no_grad():
            improved = res.lower > best.lower  # [B, S]
            if bool(improved.any()):
                mask = improved
                best = LinearBound(
                    torch.where(_expand(mask, res.A), res.A.detach(), best.A),
                    torch.where(mask, res.bias.detach(), best.bias),
                    torch.where(mask, res.lower.detach(), best.lower),
                )
                for k, v in alphas.items():
                    row_mask = mask.any(dim=1, keepdim=True) if options.shared else mask
                    best_alpha[k] = torch.where(_expand(row_mask, v), v.detach(), best_alpha[k])
            if stop is not None and stop(best.lower):
                break
            opt.step()
            sched.step()
            for v in alphas.values():
                v.clamp_(0.0, 1.0)
    return best, best_alpha


def _alpha_search_cast(network: Network, bounds: Mapping[str, Bounds], c: torch.Tensor, options: AlphaOptions,
                       init: Mapping[str, torch.Tensor] | None, stop: Callable[[torch.Tensor], bool] | None,
                       budget: Budget | None) -> tuple[LinearBound, dict[str, torch.Tensor]]:
    """alpha-CROWN with the slopes searched in ``options.search_dtype`` and the bound computed
    in ``c.dtype``: per row, the better of plain CROWN and the searched slopes' bound."""
    low, high = options.search_dtype, c.dtype
    cast = {k: Bounds(v.lower.to(low), v.upper.to(low)) for k, v in bounds.items()}
    start = None if init is None else {k: v.to(low) for k, v in init.items()}
    _, alphas = alpha_crown_objective(network.to(dtype=low), cast, c.to(low), replace(options, search_dtype=None),
                                      start, stop, budget)
    alphas = {k: v.to(high) for k, v in alphas.items()}
    with torch.no_grad():
        found = crown_objective(network, bounds, c, alphas)
        plain = crown_objective(network, bounds, c)
    better = found.lower >= plain.lower
    best = LinearBound(torch.where(_expand(better, found.A), found.A, plain.A),
                       torch.where(better, found.bias, plain.bias), torch.maximum(found.lower, plain.lower))
    return best, alphas


@dataclass(frozen=True, slots=True)
class NodeSlopes:
    """The ReLU lower slopes alpha-CROWN found for one ReLU input node's bounds: ``rows [B, R]``
    the neurons it bounded (per box; padded by repeating, see :func:`_needed_rows`),
    ``position [B, n]`` each neuron's row (0 for a neuron not bounded) and, per ReLU before the
    node, ``alphas[relu]: [B, 2R, *relu.shape]`` (the lower bound rows, then the upper bound
    rows).  Any slope in [0, 1] is sound, so they may be reused on tighter bounds."""

    rows: torch.Tensor
    position: torch.Tensor
    alphas: Mapping[str, torch.Tensor]

    @staticmethod
    def of(rows: torch.Tensor, alphas: Mapping[str, torch.Tensor], size: int) -> NodeSlopes:
        """The slopes of ``rows [B, R]`` of a node of ``size`` neurons."""
        n_boxes, big_r = rows.shape
        position = rows.new_zeros(n_boxes, size)
        position.scatter_(1, rows, torch.arange(big_r, device=rows.device).expand(n_boxes, -1))
        return NodeSlopes(rows, position, alphas)

    def gather(self, idx: torch.Tensor, box: torch.Tensor) -> dict[str, torch.Tensor]:
        """The slopes for bounding neurons ``idx: [B, r]`` of boxes ``box: [B]`` (row ``i``: the
        lower bound of neuron ``idx[:, i]``, row ``r + i`` its upper bound): ``[B, 2r, *shape]``
        per ReLU.  A neuron this node's rows do not hold gets the first row's slopes."""
        n_boxes, big_r = self.rows.shape
        flat = box.unsqueeze(1) * (2 * big_r) + self.position[box.unsqueeze(1), idx]  # [B, r]
        picks = torch.cat([flat, flat + big_r], dim=1).flatten()
        out = {}
        for name, a in self.alphas.items():
            table = a.reshape(n_boxes * 2 * big_r, *a.shape[2:])
            out[name] = table.index_select(0, picks).reshape(idx.shape[0], 2 * idx.shape[1], *a.shape[2:])
        return out


def alpha_crown_bounds(network: Network, box: Bounds, options: AlphaOptions = AlphaOptions(iterations=20),
                       bounds: Mapping[str, Bounds] | None = None, budget: Budget | None = None,
                       ) -> dict[str, Bounds]:
    """Bounds of every node with the unstable ReLU inputs tightened by alpha-CROWN (see
    :func:`alpha_crown_layers`)."""
    return alpha_crown_layers(network, box, options, bounds, budget)[0]


def alpha_crown_layers(network: Network, box: Bounds, options: AlphaOptions = AlphaOptions(iterations=20),
                       bounds: Mapping[str, Bounds] | None = None, budget: Budget | None = None,
                       ) -> tuple[dict[str, Bounds], dict[str, NodeSlopes]]:
    """Bounds of every node with the unstable ReLU inputs tightened by alpha-CROWN, and the
    slopes that tightened each such node.

    Starts from ``bounds`` (default: :func:`crown_bounds`).  Layer by layer, every ReLU input
    node behind at least one ReLU has the bounds of its unstable neurons (per domain) optimized
    as the objective of the network cut at that node, with its own slopes per row, using the
    tightened bounds of the layers before it.  Every slope in ``[0, 1]`` gives a sound bound
    and the result is intersected with the starting one, so it is never looser.  Once the
    ``budget`` has expired the remaining layers keep their starting bounds.
    """
    out = dict(crown_bounds(network, box, budget=budget) if bounds is None else bounds)
    slopes: dict[str, NodeSlopes] = {}
    users = network.users()
    ops = {n.name: n.op for n in network.nodes}
    seen_relu = False
    for k, node in enumerate(network.nodes):
        if budget is not None and budget.expired:
            break
        if node.op is Op.RELU:
            seen_relu = True
        if not seen_relu or not users[node.name] or any(ops[u] is not Op.RELU for u in users[node.name]):
            continue
        current = out[node.name]
        bsz, n = current.lower.shape[0], node.size
        lower, upper = current.lower.flatten(1), current.upper.flatten(1)
        idx = _needed_rows((lower < 0) & (upper > 0))
        r_max = idx.shape[1]
        if r_max == 0:
            continue
        eye = lower.new_zeros(bsz, r_max, n).scatter_(2, idx.unsqueeze(2), 1.0)
        c = torch.cat([eye, -eye], dim=1)
        cut = Network(network.nodes[:k + 1], node.name, network.name)
        best, alphas = alpha_crown_objective(cut, out, c, options, budget=budget)
        slopes[node.name] = NodeSlopes.of(idx, alphas, n)
        res = best.lower.detach()
        new_lower = lower.scatter_reduce(1, idx, res[:, :r_max], reduce="amax")
        new_upper = upper.scatter_reduce(1, idx, -res[:, r_max:], reduce="amin")
        out[node.name] = Bounds(new_lower.reshape(current.lower.shape), new_upper.reshape(current.upper.shape))
    return out, slopes


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.reshape(*mask.shape, *([1] * (like.dim() - 2)))


__all__ = [
    "AlphaOptions", "BackwardContext", "Bounds", "CROWN_RULES", "FORWARD_LINEAR_RULES", "IBP_RULES",
    "LinearBound", "LinearForm", "forward_bounds",
    "NodeSlopes", "alpha_crown_bounds", "alpha_crown_layers", "alpha_crown_objective", "backward", "crown_bounds",
    "crown_objective", "ibp", "ibp_objective",
    "input_bounds",
]
