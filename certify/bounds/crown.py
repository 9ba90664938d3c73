"""CROWN: one backward rule per op (:data:`CROWN_RULES`) and the one backward pass.

``CROWN_RULES[op](node, A, ctx) -> (A per input, bias)``: given ``A: [B, S, *node.shape]``, the
coefficients on the node's inputs and a constant ``[B, S]`` such that ``A . node >= sum_i A_i .
input_i + bias`` on the current bounds.  Only *lower* bounds are propagated; an upper bound is
minus the lower bound of ``-A``.  Nonlinear rules take their lines from :mod:`certify.relax`
(the relaxations are shared data).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from certify.bounds.interval import Bounds
from certify.network import ACTIVATIONS, FORWARD, Network, Node, Op, pad_input
from certify.relax import RELAXATIONS, bilinear_planes, relu_default_alpha, relu_relaxation, softmax_bounds

__all__ = ["CROWN_RULES", "RELAXED_OPS", "BackwardContext", "LinearBound", "backward", "crown_objective"]


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

    ``lower`` is its minimum over the box ``[B, S]``; ``at`` holds the coefficients the pass met
    at the nodes it was asked to record (:func:`backward`'s ``record``).
    """

    A: torch.Tensor
    bias: torch.Tensor
    lower: torch.Tensor
    at: Mapping[str, torch.Tensor] = field(default_factory=dict)


def backward(network: Network, target: str, c: torch.Tensor, ctx: BackwardContext,
             extra: Mapping[str, torch.Tensor] | None = None, record: frozenset[str] = frozenset()) -> LinearBound:
    """Lower-bound ``c . value(target)`` over the input box in ``ctx.bounds``: the one CROWN
    backward pass.

    ``c: [B, S, *target.shape]``.  ``extra[name]`` is added to the coefficients of node ``name``
    when the pass reaches it (beta-CROWN's split multipliers: terms that are non-positive on the
    domain, so the bound stays sound); the coefficients met at the nodes in ``record`` (after
    their extra term) are returned in ``at``.
    """
    index = {n.name: k for k, n in enumerate(network.nodes)}
    acc: dict[str, torch.Tensor] = {target: c}
    bias = c.new_zeros(c.shape[:2])
    at: dict[str, torch.Tensor] = {}
    for node in reversed(network.nodes[1:index[target] + 1]):
        a = acc.pop(node.name, None)
        if a is None:
            continue
        if extra and node.name in extra:
            a = a + extra[node.name]
        if node.name in record:
            at[node.name] = a
        a_ins, b = CROWN_RULES[node.op](node, a, ctx)
        bias = bias + b
        for name, a_in in zip(node.inputs, a_ins):
            acc[name] = acc[name] + a_in if name in acc else a_in
    box = ctx.bounds[network.input.name]
    a_x = acc.get(network.input.name)
    if a_x is None:
        a_x = c.new_zeros(*c.shape[:2], *box.lower.shape[1:])
    if extra and network.input.name in extra:
        a_x = a_x + extra[network.input.name]
    lo = box.lower.unsqueeze(1)
    hi = box.upper.unsqueeze(1)
    lower = _sum_rows(a_x.clamp(min=0) * lo + a_x.clamp(max=0) * hi) + bias
    return LinearBound(a_x, bias, lower, at)


def crown_objective(network: Network, bounds: Mapping[str, Bounds], c: torch.Tensor,
                    alphas: Mapping[str, torch.Tensor] | None = None) -> LinearBound:
    """Lower-bound ``c . net(x)`` (``c: [B, S, n_out]``) given every node's bounds."""
    out_shape = network.output_shape
    c = c.reshape(*c.shape[:2], *out_shape)
    return backward(network, network.output, c, BackwardContext(bounds, alphas or {}))
