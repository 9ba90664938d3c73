"""The network IR: a frozen DAG of nodes over a small canonical op set.

Every value in the graph has a per-sample shape; at run time tensors carry a leading batch
axis, so a node of shape ``(C, H, W)`` holds a tensor of shape ``[B, C, H, W]``.

Canonical ops and their semantics (``x`` is the first input, shapes per sample):

=============  ==========================================================================
``input``      the network input (exactly one, first node)
``linear``     ``x @ weight + bias`` over the last axis; weight ``[n_in, n_out]``
``conv``       2-D convolution; weight ``[C_out, C_in/groups, kh, kw]``, bias ``[C_out]``;
               attrs ``stride``, ``padding`` (top, left, bottom, right), ``dilation``,
               ``groups``
``affine``     elementwise ``x * scale + shift`` (params broadcast to the node shape)
``add``        ``x + y`` of two nodes of equal shape
``sub``        ``x - y`` of two nodes of equal shape
``relu``, ``sigmoid``, ``tanh``, ``sign`` (0 at 0), ``sin``, ``cos``, ``floor``, ``exp``,
``reciprocal`` (``1 / x``)  elementwise nonlinearities
``leaky_relu`` elementwise ``max(x, alpha x)`` for ``x >= 0`` / ``x < 0``; attrs ``alpha``
``pow``        elementwise ``x ** exponent``; attrs ``exponent`` (an integer >= 2)
``softmax``    attrs ``axis``: the per-sample axis it normalises over
``mul``        ``x * y`` elementwise, two nodes of equal shape (the bilinear product)
``matmul``     ``x @ y`` of two nodes over their last two axes (leading axes equal)
``maxpool``    2-D max pooling; attrs ``kernel``, ``stride``, ``padding`` (t, l, b, r)
``avgpool``    2-D average pooling; attrs as maxpool plus ``count_include_pad``
``conv_transpose``  2-D transposed convolution; weight ``[C_in, C_out/groups, kh, kw]``,
               bias ``[C_out]``; attrs ``stride``, ``padding`` (t, l, b, r: cropped from the
               full output), ``output_padding`` (bottom, right), ``dilation``, ``groups``
``upsample``   nearest-neighbour upsampling by integer factors; attrs ``scales`` (one per
               per-sample axis)
``pad``        constant padding; attrs ``pads`` ((before, after) per per-sample axis), ``value``
``gather``     ``x`` indexed along one axis by constant indices; attrs ``axis``, ``indices``
``reduce_sum`` sum over attrs ``axes`` (per-sample axes), ``keepdims``
``expand``     broadcast to attrs ``shape`` (same rank; axes of size 1 repeat)
``constant``   the constant param ``value`` (per-sample shape) for every sample; its one input
               (the network input) only gives the batch size
``opaque``     a whole model certify cannot convert, run as is: attrs ``run`` (a callable mapping
               one float32 sample to its flat outputs, e.g. an onnxruntime session) and
               ``reason`` (why it was not converted); only evaluated, never bounded
``reshape``    attrs ``shape``: the new per-sample shape (row-major order kept)
``transpose``  attrs ``perm``: a permutation of the per-sample axes
``concat``     attrs ``axis``: per-sample axis along which the inputs are joined
``slice``      attrs ``axis``, ``start``, ``stop``: ``x[..., start:stop, ...]`` on one axis
=============  ==========================================================================

The concrete semantics (``FORWARD``) is one table keyed by op, like every other algorithm.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F


class Op(str, Enum):
    INPUT = "input"
    LINEAR = "linear"
    CONV = "conv"
    AFFINE = "affine"
    ADD = "add"
    SUB = "sub"
    RELU = "relu"
    SIGMOID = "sigmoid"
    TANH = "tanh"
    MAXPOOL = "maxpool"
    AVGPOOL = "avgpool"
    RESHAPE = "reshape"
    TRANSPOSE = "transpose"
    CONCAT = "concat"
    SLICE = "slice"
    SIGN = "sign"
    SIN = "sin"
    COS = "cos"
    FLOOR = "floor"
    EXP = "exp"
    RECIPROCAL = "reciprocal"
    LEAKY_RELU = "leaky_relu"
    POW = "pow"
    SOFTMAX = "softmax"
    MUL = "mul"
    MATMUL = "matmul"
    CONV_TRANSPOSE = "conv_transpose"
    UPSAMPLE = "upsample"
    PAD = "pad"
    GATHER = "gather"
    REDUCE_SUM = "reduce_sum"
    EXPAND = "expand"
    CONSTANT = "constant"
    OPAQUE = "opaque"


#: Elementwise nonlinear ops (their relaxations live in :mod:`certify.relax`).
ACTIVATIONS: frozenset[Op] = frozenset({Op.RELU, Op.SIGMOID, Op.TANH, Op.SIGN, Op.SIN, Op.COS, Op.FLOOR, Op.EXP,
                                        Op.RECIPROCAL, Op.LEAKY_RELU, Op.POW})
#: Ops whose output is an affine function of their inputs (exact in every bound method).
AFFINE_OPS: frozenset[Op] = frozenset({
    Op.INPUT, Op.LINEAR, Op.CONV, Op.AFFINE, Op.ADD, Op.SUB, Op.AVGPOOL, Op.RESHAPE, Op.TRANSPOSE, Op.CONCAT,
    Op.SLICE, Op.CONV_TRANSPOSE, Op.UPSAMPLE, Op.PAD, Op.GATHER, Op.REDUCE_SUM, Op.EXPAND, Op.CONSTANT})
#: Ops that are continuous and piecewise linear (a network made only of these is "PL": small
#: enough boxes make it linear, so input splitting is complete on it).
PIECEWISE_LINEAR: frozenset[Op] = AFFINE_OPS | {Op.RELU, Op.LEAKY_RELU, Op.MAXPOOL}


@dataclass(frozen=True, slots=True, eq=False)
class Node:
    """One operation of the DAG.

    ``shape`` is the per-sample shape of this node's output.
    """

    name: str
    op: Op
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    params: Mapping[str, torch.Tensor] = field(default_factory=dict)
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True, slots=True, eq=False)
class Network:
    """A frozen DAG in topological order; ``nodes[0]`` is the input node."""

    nodes: tuple[Node, ...]
    output: str
    name: str = "network"

    def __post_init__(self) -> None:
        if not self.nodes or self.nodes[0].op is not Op.INPUT:
            raise ValueError("the first node of a Network must be its input")
        seen: set[str] = set()
        for node in self.nodes:
            missing = [i for i in node.inputs if i not in seen]
            if missing:
                raise ValueError(f"node {node.name!r} uses {missing} before they are defined")
            seen.add(node.name)
        if self.output not in seen:
            raise ValueError(f"output {self.output!r} is not a node")

    # -- structure -------------------------------------------------------------------
    @property
    def input(self) -> Node:
        return self.nodes[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.nodes[0].shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.node(self.output).shape

    @property
    def input_size(self) -> int:
        return self.nodes[0].size

    @property
    def output_size(self) -> int:
        return self.node(self.output).size

    def node(self, name: str) -> Node:
        return self._index()[name]

    def _index(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    def users(self) -> dict[str, list[str]]:
        """Map each node name to the names of the nodes that consume it."""
        out: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i].append(n.name)
        return out

    def ops(self) -> frozenset[Op]:
        return frozenset(n.op for n in self.nodes)

    @property
    def is_opaque(self) -> bool:
        """Whether this is a model certify could not convert, kept whole (see ``Op.OPAQUE``)."""
        return Op.OPAQUE in self.ops()

    @property
    def is_piecewise_linear(self) -> bool:
        return self.ops() <= PIECEWISE_LINEAR

    @property
    def dtype(self) -> torch.dtype:
        for n in self.nodes:
            for p in n.params.values():
                return p.dtype
        return torch.float32

    @property
    def device(self) -> torch.device:
        for n in self.nodes:
            for p in n.params.values():
                return p.device
        return torch.device("cpu")

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Network:
        """A copy with every parameter moved to ``dtype`` / ``device``."""
        nodes = tuple(
            replace(n, params={k: v.to(dtype=dtype, device=device) for k, v in n.params.items()})
            for n in self.nodes
        )
        return replace(self, nodes=nodes)

    # -- concrete semantics ----------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate the network on a batch ``x: [B, *input_shape]`` -> ``[B, *output_shape]``."""
        return self.forward_all(x)[self.output]

    def forward_all(self, x: torch.Tensor, upto: str | None = None) -> dict[str, torch.Tensor]:
        """Values of every node (up to and including ``upto``) for the batch ``x``."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected input of shape [B, {self.input_shape}], got {tuple(x.shape)}")
        values: dict[str, torch.Tensor] = {self.nodes[0].name: x}
        for node in self.nodes[1:]:
            args = [values[i] for i in node.inputs]
            values[node.name] = FORWARD[node.op](node, args)
            if node.name == upto:
                break
        return values

    __call__ = forward


# ---------------------------------------------------------------------------------------
# Concrete semantics, one rule per op.  Shared with the bound rules (affine ops are
# evaluated by these functions on bound centres and on linear coefficients).
# ---------------------------------------------------------------------------------------

def pad_input(x: torch.Tensor, padding: Sequence[int], value: float = 0.0) -> torch.Tensor:
    """Pad the two trailing axes of ``x`` by (top, left, bottom, right)."""
    top, left, bottom, right = padding
    if top == left == bottom == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


def _linear(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    y = torch.matmul(args[0], node.params["weight"])
    bias = node.params.get("bias")
    return y if bias is None else y + bias


def _conv(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    a = node.attrs
    x = pad_input(args[0], a["padding"])
    return F.conv2d(x, node.params["weight"], node.params.get("bias"), stride=a["stride"],
                    dilation=a["dilation"], groups=a["groups"])


def _affine(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    return args[0] * node.params["scale"] + node.params["shift"]


def _maxpool(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    a = node.attrs
    x = pad_input(args[0], a["padding"], value=-math.inf)
    return F.max_pool2d(x, a["kernel"], a["stride"])


def _avgpool(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    a = node.attrs
    x = args[0]
    if a["count_include_pad"]:
        return F.avg_pool2d(pad_input(x, a["padding"]), a["kernel"], a["stride"])
    ones = torch.ones_like(x[:1])
    total = F.avg_pool2d(pad_input(x, a["padding"]), a["kernel"], a["stride"])
    frac = F.avg_pool2d(pad_input(ones, a["padding"]), a["kernel"], a["stride"])
    return total / frac


def _reshape(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    x = args[0]
    return x.reshape(x.shape[0], *node.attrs["shape"])


def _transpose(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    perm = node.attrs["perm"]
    return args[0].permute(0, *(p + 1 for p in perm))


def _concat(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(args, dim=node.attrs["axis"] + 1)


def _slice(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    a = node.attrs
    return args[0].narrow(a["axis"] + 1, a["start"], a["stop"] - a["start"])


def _leaky_relu(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    x = args[0]
    return torch.where(x >= 0, x, x * node.attrs["alpha"])


def _softmax(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    return torch.softmax(args[0], dim=node.attrs["axis"] + 1)


def _conv_transpose(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    a = node.attrs
    full = F.conv_transpose2d(args[0], node.params["weight"], node.params.get("bias"), stride=a["stride"],
                              output_padding=a["output_padding"], groups=a["groups"], dilation=a["dilation"])
    top, left, bottom, right = a["padding"]
    h, w = full.shape[-2:]
    return full[..., top:h - bottom, left:w - right]


def _upsample(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    x = args[0]
    for axis, factor in enumerate(node.attrs["scales"]):
        if factor != 1:
            x = torch.repeat_interleave(x, factor, dim=axis + 1)
    return x


def _pad(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    flat = [p for before, after in reversed(node.attrs["pads"]) for p in (before, after)]
    return F.pad(args[0], flat, value=node.attrs["value"])


def _gather(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    index = torch.as_tensor(node.attrs["indices"], dtype=torch.long, device=args[0].device)
    return args[0].index_select(node.attrs["axis"] + 1, index)


def _reduce_sum(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    dims = tuple(a + 1 for a in node.attrs["axes"])
    return args[0].sum(dim=dims, keepdim=node.attrs["keepdims"])


def _constant(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    value = node.params["value"]
    return value.to(args[0].dtype).unsqueeze(0).expand(args[0].shape[0], *value.shape)


def _opaque(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    """Each sample through the model's own runtime (float32, no gradient)."""
    x = args[0].detach().cpu().to(torch.float32).numpy()
    run = node.attrs["run"]
    out = [torch.as_tensor(run(sample)).reshape(node.shape) for sample in x]
    return torch.stack(out).to(dtype=args[0].dtype, device=args[0].device)


def _straight_through(op: Op) -> Callable[[Node, list[torch.Tensor]], torch.Tensor]:
    """``op``'s exact values with the identity's gradient: ``f(x)`` plus ``x - x`` (zero, but
    with gradient one) for the steps of sign and floor, whose true gradient is zero."""
    def run(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        x = args[0]
        return FORWARD[op](node, [x.detach()]) + (x - x.detach())

    return run


FORWARD: dict[Op, Callable[[Node, list[torch.Tensor]], torch.Tensor]] = {
    Op.LINEAR: _linear,
    Op.CONV: _conv,
    Op.AFFINE: _affine,
    Op.ADD: lambda n, a: a[0] + a[1],
    Op.SUB: lambda n, a: a[0] - a[1],
    Op.RELU: lambda n, a: torch.relu(a[0]),
    Op.SIGMOID: lambda n, a: torch.sigmoid(a[0]),
    Op.TANH: lambda n, a: torch.tanh(a[0]),
    Op.MAXPOOL: _maxpool,
    Op.AVGPOOL: _avgpool,
    Op.RESHAPE: _reshape,
    Op.TRANSPOSE: _transpose,
    Op.CONCAT: _concat,
    Op.SLICE: _slice,
    Op.SIGN: lambda n, a: torch.sign(a[0]),
    Op.SIN: lambda n, a: torch.sin(a[0]),
    Op.COS: lambda n, a: torch.cos(a[0]),
    Op.FLOOR: lambda n, a: torch.floor(a[0]),
    Op.EXP: lambda n, a: torch.exp(a[0]),
    Op.RECIPROCAL: lambda n, a: torch.reciprocal(a[0]),
    Op.LEAKY_RELU: _leaky_relu,
    Op.POW: lambda n, a: a[0] ** n.attrs["exponent"],
    Op.SOFTMAX: _softmax,
    Op.MUL: lambda n, a: a[0] * a[1],
    Op.MATMUL: lambda n, a: torch.matmul(a[0], a[1]),
    Op.CONV_TRANSPOSE: _conv_transpose,
    Op.UPSAMPLE: _upsample,
    Op.PAD: _pad,
    Op.GATHER: _gather,
    Op.REDUCE_SUM: _reduce_sum,
    Op.EXPAND: lambda n, a: a[0].expand(a[0].shape[0], *n.attrs["shape"]),
    Op.CONSTANT: _constant,
    Op.OPAQUE: _opaque,
}

#: For searches that follow gradients (the fuzzer): ops whose gradient is zero almost everywhere
#: get the identity's instead, with their values unchanged (a straight-through estimate).
#: Only a search heuristic: every point found is checked on the exact semantics.
GRADIENT_SURROGATES: dict[Op, Callable[[Node, list[torch.Tensor]], torch.Tensor]] = {
    Op.SIGN: _straight_through(Op.SIGN),
    Op.FLOOR: _straight_through(Op.FLOOR),
}
