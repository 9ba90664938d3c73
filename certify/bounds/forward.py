"""Forward linear bounds: every node bounded by linear functions of the (flattened) input.
Cheap when the input is low-dimensional (ACAS Xu has 5 inputs): tensors ``[B, *shape, d]``.
``FORWARD_LINEAR_RULES[op](node, input forms, input bounds) -> LinearForm``; an op without one
falls back to its interval bounds (a constant form)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from certify.bounds.interval import Bounds
from certify.network import FORWARD, Node, Op
from certify.relax import RELAXATIONS

__all__ = ["FORWARD_LINEAR_RULES", "LinearForm", "constant_form"]


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


def constant_form(b: Bounds, d: int) -> LinearForm:
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
