"""ONNX -> :class:`~certify.network.Network`, through the public ``onnx`` API only.

The converter is one table, :data:`CONVERTERS`, keyed by ONNX op type.  Each converter maps one
ONNX node whose inputs include a value computed from the network input onto canonical IR nodes.
Nodes whose inputs are all constants (initializers, ``Constant`` nodes, ``Shape`` of a value of
known shape) are evaluated at load time with numpy (``onnx.reference``), so the shape
sub-graphs that exporters emit for ``Flatten`` / ``Reshape`` disappear.

Batch convention: IR shapes are per sample.  When the ONNX input has rank >= 2 and its first
dimension is 1 or symbolic, that dimension is the batch axis: it is stripped from every value
and ONNX axes are shifted by one (``[1, 3, 32, 32]`` -> ``(3, 32, 32)``).  Otherwise (e.g. an
input of shape ``[5]``) the ONNX shapes are the per-sample shapes themselves.

After conversion a single sweep simplifies the graph: an ``affine`` (from Add/Sub/Mul/Div,
BatchNormalization...) that is per output channel is folded into a preceding ``linear`` or
``conv`` with no other user, consecutive affines and reshapes are merged, identities dropped.
Parameters are folded in float64 and stored as float32.  ``affine`` parameters ``scale`` and
``shift`` are stored expanded to the full node shape.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch

from certify.errors import ModelError, UnsupportedOp
from certify.network import FORWARD, Network, Node, Op

if TYPE_CHECKING:
    import onnx

__all__ = ["CONVERTERS", "load_onnx", "load_onnx_model"]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Values flowing through the conversion
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ref:
    """A value computed from the network input: the IR node that holds it (per-sample shape)."""

    name: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True, slots=True)
class _Unavailable:
    """An output of a node that certify does not produce (e.g. MaxPool's indices)."""

    op_type: str
    node_name: str
    index: int


_Value = Union[_Ref, np.ndarray, _Unavailable]


@dataclass(frozen=True, slots=True)
class _OnnxNode:
    """The parts of an ONNX NodeProto a converter needs (attributes decoded)."""

    op_type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    proto: Any

    @property
    def out(self) -> str:
        return self.outputs[0]

    def unsupported(self, detail: str) -> UnsupportedOp:
        return UnsupportedOp(self.op_type, self.name, detail)


_FLOAT_TYPES = frozenset({1, 10, 11, 16})  # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


class _Graph:
    """The IR under construction: nodes in topological order and the ONNX-name environment."""

    def __init__(self, name: str, batched: bool, opset: int, onnx_names: set[str]) -> None:
        self.name = name
        self.batched = batched
        self.opset = opset
        self.nodes: dict[str, Node] = {}
        self.env: dict[str, _Value] = {}
        self._taken = set(onnx_names)

    # -- values --------------------------------------------------------------------------
    def value(self, n: _OnnxNode, i: int) -> _Value | None:
        """The value of input ``i`` of ``n`` (None when the optional input is absent)."""
        if i >= len(n.inputs) or not n.inputs[i]:
            return None
        v = self.env[n.inputs[i]]
        if isinstance(v, _Unavailable):
            raise UnsupportedOp(v.op_type, v.node_name, f"its output #{v.index} is not supported")
        return v

    def ref(self, n: _OnnxNode, i: int) -> _Ref:
        v = self.value(n, i)
        if not isinstance(v, _Ref):
            raise n.unsupported(f"input #{i} must be computed from the network input")
        return v

    def const(self, n: _OnnxNode, i: int, what: str) -> np.ndarray | None:
        v = self.value(n, i)
        if v is not None and not isinstance(v, np.ndarray):
            raise n.unsupported(f"{what} (input #{i}) must be a constant")
        return v

    def full_shape(self, x: _Ref) -> tuple[int, ...]:
        """The ONNX shape of ``x`` (with the batch axis of size 1, if the model has one)."""
        return (1, *x.shape) if self.batched else x.shape

    def axis(self, n: _OnnxNode, axis: int, rank: int) -> int:
        """Per-sample axis for the ONNX ``axis`` of a value of ONNX rank ``rank``."""
        if not -rank <= axis < rank:
            raise ModelError(f"{self.name}: node {n.name!r} ({n.op_type}): axis {axis} out of range")
        axis %= rank
        if self.batched:
            if axis == 0:
                raise n.unsupported("it acts on the batch axis")
            axis -= 1
        return axis

    # -- emission ----------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        k = 0
        while f"{base}/{k}" in self._taken:
            k += 1
        self._taken.add(f"{base}/{k}")
        return f"{base}/{k}"

    def emit(self, n: _OnnxNode, name: str, op: Op, inputs: Sequence[_Ref],
             params: dict[str, np.ndarray] | None = None, attrs: dict[str, Any] | None = None) -> _Ref:
        """Add an IR node; its shape is what :data:`FORWARD` computes on a zero sample."""
        tensors = {k: torch.from_numpy(np.array(v, dtype=np.float64)) for k, v in (params or {}).items()}
        node = Node(name, op, tuple(i.name for i in inputs), (), tensors, dict(attrs or {}))
        zeros = [torch.zeros((1, *i.shape), dtype=torch.float64) for i in inputs]
        try:
            shape = tuple(FORWARD[op](node, zeros).shape[1:])
        except RuntimeError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelError(f"{self.name}: node {n.name!r} ({n.op_type}) is inconsistent: {first}") from e
        self.nodes[name] = replace(node, shape=shape)
        self._taken.add(name)
        return _Ref(name, shape)

    def affine(self, n: _OnnxNode, x: _Ref, scale: Any = 1.0, shift: Any = 0.0) -> _Ref:
        """``x * scale + shift`` with ONNX-broadcast constants; must keep the shape of ``x``."""
        params = {"scale": self.per_sample(n, x, scale), "shift": self.per_sample(n, x, shift)}
        return self.emit(n, n.out, Op.AFFINE, [x], params)

    def per_sample(self, n: _OnnxNode, x: _Ref, c: Any) -> np.ndarray:
        """Constant ``c`` (ONNX broadcasting against ``x``) expanded to ``x``'s per-sample shape."""
        c = np.asarray(c, dtype=np.float64)
        rank = len(self.full_shape(x))
        if c.ndim > rank:
            raise n.unsupported(f"constant of shape {c.shape} would change the shape of the value")
        if self.batched and c.ndim == rank:
            if c.shape[0] != 1:
                raise n.unsupported(f"constant of shape {c.shape} varies along the batch axis")
            c = c[0]
        try:
            out = np.broadcast_shapes(c.shape, x.shape)
        except ValueError:
            out = None
        if out != x.shape:
            raise n.unsupported(f"constant of shape {c.shape} does not broadcast to {x.shape}")
        return np.broadcast_to(c, x.shape).copy()

    def reshape(self, n: _OnnxNode, x: _Ref, full: Sequence[int]) -> _Ref:
        """``x`` reshaped to the ONNX shape ``full`` (which keeps the batch axis first)."""
        full = tuple(int(d) for d in full)
        if self.batched:
            if not full or full[0] != 1:
                raise n.unsupported(f"reshape to {list(full)} would move the batch axis")
            full = full[1:]
        if math.prod(full) != x.size:
            raise ModelError(f"{self.name}: node {n.name!r} ({n.op_type}) reshapes {x.shape} to {full}")
        if full == x.shape:
            return x
        return self.emit(n, n.out, Op.RESHAPE, [x], attrs={"shape": full})


# ---------------------------------------------------------------------------------------
# Converters, one per ONNX op type.  Each returns the values of the node's outputs.
# ---------------------------------------------------------------------------------------

_Converter = Callable[[_Graph, _OnnxNode], Sequence[_Value]]


def _identity(g: _Graph, n: _OnnxNode) -> list[_Value]:
    return [g.ref(n, 0)]


def _cast(g: _Graph, n: _OnnxNode) -> list[_Value]:
    if n.attrs.get("to") not in _FLOAT_TYPES:
        raise n.unsupported("cast of a network value to a non-float type")
    return [g.ref(n, 0)]


def _activation(op: Op) -> _Converter:
    def convert(g: _Graph, n: _OnnxNode) -> list[_Value]:
        return [g.emit(n, n.out, op, [g.ref(n, 0)])]

    return convert


def _arithmetic(kind: str) -> _Converter:
    """Add, Sub, Mul, Div: node (+-*/) constant, constant (+-*) node, node (+-) node."""

    def convert(g: _Graph, n: _OnnxNode) -> list[_Value]:
        a, b = g.value(n, 0), g.value(n, 1)
        if isinstance(a, _Ref) and isinstance(b, _Ref):
            if kind not in ("Add", "Sub"):
                raise n.unsupported("both operands are computed from the input; one must be constant")
            if a.shape != b.shape:
                raise n.unsupported(f"operands of different shapes {a.shape} and {b.shape}")
            return [g.emit(n, n.out, Op.ADD if kind == "Add" else Op.SUB, [a, b])]
        if isinstance(a, _Ref) and isinstance(b, np.ndarray):
            c = b.astype(np.float64)
            if kind == "Div" and np.any(c == 0):
                raise n.unsupported("division by a constant containing zero")
            if kind == "Div":
                return [g.affine(n, a, 1.0 / c, 0.0)]
            scale, shift = {"Add": (1.0, c), "Sub": (1.0, -c), "Mul": (c, 0.0)}[kind]
            return [g.affine(n, a, scale, shift)]
        if isinstance(b, _Ref) and isinstance(a, np.ndarray):
            c = a.astype(np.float64)
            if kind == "Div":
                raise n.unsupported("division by a value computed from the input")
            scale, shift = {"Add": (1.0, c), "Sub": (-1.0, c), "Mul": (c, 0.0)}[kind]
            return [g.affine(n, b, scale, shift)]
        raise n.unsupported("missing operand")

    return convert


def _neg(g: _Graph, n: _OnnxNode) -> list[_Value]:
    return [g.affine(n, g.ref(n, 0), -1.0, 0.0)]


def _matrix(n: _OnnxNode, w: np.ndarray, max_rank: int) -> np.ndarray:
    """A constant MatMul operand as a 2-D matrix (leading axes of size 1 dropped)."""
    if w.ndim > 2 and (w.ndim > max_rank or any(d != 1 for d in w.shape[:-2])):
        raise n.unsupported(f"batched matrix product with a constant of shape {w.shape}")
    return w.reshape(w.shape[-2:]).astype(np.float64) if w.ndim >= 2 else w.astype(np.float64)


def _matmul(g: _Graph, n: _OnnxNode) -> list[_Value]:
    a, b = g.value(n, 0), g.value(n, 1)
    if isinstance(a, _Ref) and isinstance(b, np.ndarray):  # x @ W: linear over the last axis
        w = _matrix(n, b, len(g.full_shape(a)))
        if not a.shape:
            raise n.unsupported("matrix product of a scalar")
        if w.ndim == 1:  # x @ w reduces the last axis
            lin = g.emit(n, g.fresh(n.out), Op.LINEAR, [a], {"weight": w[:, None]})
            return [g.reshape(n, lin, g.full_shape(lin)[:-1])]
        return [g.emit(n, n.out, Op.LINEAR, [a], {"weight": w})]
    if isinstance(a, np.ndarray) and isinstance(b, _Ref):  # W @ x
        w = _matrix(n, a, len(g.full_shape(b)))
        if w.ndim != 2:
            raise n.unsupported(f"left constant operand of shape {a.shape}")
        if len(g.full_shape(b)) == 1:  # W @ x for a 1-D x (no batch axis)
            return [g.emit(n, n.out, Op.LINEAR, [b], {"weight": w.T})]
        if len(b.shape) < 2:
            raise n.unsupported("the product would contract the batch axis")
        # W @ x over the last two axes: transpose, linear, transpose back.
        perm = (*range(len(b.shape) - 2), len(b.shape) - 1, len(b.shape) - 2)
        t = g.emit(n, g.fresh(n.out), Op.TRANSPOSE, [b], attrs={"perm": perm})
        lin = g.emit(n, g.fresh(n.out), Op.LINEAR, [t], {"weight": w.T})
        return [g.emit(n, n.out, Op.TRANSPOSE, [lin], attrs={"perm": perm})]
    raise n.unsupported("one operand must be a constant matrix")


def _gemm(g: _Graph, n: _OnnxNode) -> list[_Value]:
    if n.attrs.get("transA", 0):
        raise n.unsupported("transA=1")
    x = g.ref(n, 0)
    b = g.const(n, 1, "B")
    c = g.const(n, 2, "C")
    if len(g.full_shape(x)) != 2 or b is None or b.ndim != 2:
        raise ModelError(f"{g.name}: node {n.name!r} (Gemm) needs 2-D operands")
    w = (b.T if n.attrs.get("transB", 0) else b).astype(np.float64) * n.attrs.get("alpha", 1.0)
    if c is None:
        return [g.emit(n, n.out, Op.LINEAR, [x], {"weight": w})]
    lin = g.emit(n, g.fresh(n.out), Op.LINEAR, [x], {"weight": w})
    return [g.affine(n, lin, 1.0, c.astype(np.float64) * n.attrs.get("beta", 1.0))]


def _window(g: _Graph, n: _OnnxNode, x: _Ref, kernel: Sequence[int]) -> dict[str, Any]:
    """stride, padding (t, l, b, r) and dilation of a 2-D conv / pool node."""
    if len(x.shape) != 3 or not g.batched:
        raise n.unsupported(f"2-D window ops need an input of shape [N, C, H, W], got {g.full_shape(x)}")
    if len(kernel) != 2:
        raise n.unsupported(f"only 2-D kernels are supported, got kernel shape {list(kernel)}")
    stride = tuple(int(s) for s in n.attrs.get("strides", (1, 1)))
    dilation = tuple(int(d) for d in n.attrs.get("dilations", (1, 1)))
    auto_pad = n.attrs.get("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = tuple(int(p) for p in n.attrs.get("pads", (0, 0, 0, 0)))
    elif auto_pad == "VALID":
        pads = (0, 0, 0, 0)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(x.shape[1:], kernel, stride, dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = (*begin, *end)
    else:
        raise n.unsupported(f"auto_pad={auto_pad}")
    return {"stride": stride, "padding": pads, "dilation": dilation}


def _conv(g: _Graph, n: _OnnxNode) -> list[_Value]:
    x = g.ref(n, 0)
    w = g.const(n, 1, "weight")
    bias = g.const(n, 2, "bias")
    if w is None or w.ndim != 4:
        raise n.unsupported(f"only 2-D convolution is supported (weight shape {None if w is None else w.shape})")
    attrs = _window(g, n, x, w.shape[2:])
    attrs["groups"] = int(n.attrs.get("group", 1))
    params = {"weight": w} if bias is None else {"weight": w, "bias": bias}
    return [g.emit(n, n.out, Op.CONV, [x], params, attrs)]


def _batchnorm(g: _Graph, n: _OnnxNode) -> list[_Value]:
    if n.attrs.get("training_mode", 0) or n.attrs.get("spatial", 1) != 1:
        raise n.unsupported("training mode or spatial=0")
    x = g.ref(n, 0)
    scale, bias, mean, var = (g.const(n, i, w) for i, w in enumerate(("scale", "B", "mean", "var"), 1))
    if scale is None or bias is None or mean is None or var is None:
        raise ModelError(f"{g.name}: node {n.name!r} (BatchNormalization) lacks an input")
    s = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + n.attrs.get("epsilon", 1e-5))
    t = bias.astype(np.float64) - mean.astype(np.float64) * s
    full = g.full_shape(x)
    if len(full) < 2:
        raise n.unsupported("input without a channel axis")
    channel = (len(full) - 2) * (1,)  # channel axis is ONNX axis 1
    return [g.affine(n, x, s.reshape(-1, *channel), t.reshape(-1, *channel))]


def _pool(op: Op) -> _Converter:
    def convert(g: _Graph, n: _OnnxNode) -> list[_Value]:
        x = g.ref(n, 0)
        kernel = tuple(int(k) for k in n.attrs.get("kernel_shape", ()))
        attrs = _window(g, n, x, kernel)
        if any(d != 1 for d in attrs.pop("dilation")):
            raise n.unsupported("dilated pooling")
        if n.attrs.get("ceil_mode", 0):
            pads = attrs["padding"]
            for size, k, s, lo, hi in zip(x.shape[1:], kernel, attrs["stride"], pads[:2], pads[2:]):
                if (size + lo + hi - k) % s:
                    raise n.unsupported("ceil_mode=1 where it changes the output size")
        attrs["kernel"] = kernel
        if op is Op.AVGPOOL:
            attrs["count_include_pad"] = bool(n.attrs.get("count_include_pad", 0))
        return [g.emit(n, n.out, op, [x], attrs=attrs)]

    return convert


def _global_pool(op: Op) -> _Converter:
    def convert(g: _Graph, n: _OnnxNode) -> list[_Value]:
        x = g.ref(n, 0)
        if len(x.shape) != 3 or not g.batched:
            raise n.unsupported(f"global pooling needs an input of shape [N, C, H, W], got {g.full_shape(x)}")
        attrs: dict[str, Any] = {"kernel": x.shape[1:], "stride": x.shape[1:], "padding": (0, 0, 0, 0)}
        if op is Op.AVGPOOL:
            attrs["count_include_pad"] = True
        return [g.emit(n, n.out, op, [x], attrs=attrs)]

    return convert


def _flatten(g: _Graph, n: _OnnxNode) -> list[_Value]:
    x = g.ref(n, 0)
    full = g.full_shape(x)
    axis = int(n.attrs.get("axis", 1))
    if not -len(full) <= axis <= len(full):
        raise ModelError(f"{g.name}: node {n.name!r} (Flatten): axis {axis} out of range")
    axis += len(full) if axis < 0 else 0
    return [g.reshape(n, x, (math.prod(full[:axis]), math.prod(full[axis:])))]


def _reshape(g: _Graph, n: _OnnxNode) -> list[_Value]:
    x = g.ref(n, 0)
    target = g.const(n, 1, "shape")
    if target is None:
        raise ModelError(f"{g.name}: node {n.name!r} (Reshape) has no shape")
    full = g.full_shape(x)
    dims = [int(d) for d in target.reshape(-1)]
    if not n.attrs.get("allowzero", 0):
        dims = [full[i] if d == 0 else d for i, d in enumerate(dims)]
    if dims.count(-1) > 1:
        raise ModelError(f"{g.name}: node {n.name!r} (Reshape) has several -1 dims")
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if known == 0 or math.prod(full) % known:
            raise ModelError(f"{g.name}: node {n.name!r} (Reshape) cannot reshape {full} to {dims}")
        dims[dims.index(-1)] = math.prod(full) // known
    return [g.reshape(n, x, dims)]


def _axes(g: _Graph, n: _OnnxNode) -> list[int] | None:
    """``axes`` of Squeeze / Unsqueeze: an attribute before opset 13, an input since."""
    if "axes" in n.attrs:
        return [int(a) for a in n.attrs["axes"]]
    axes = g.const(n, 1, "axes")
    return None if axes is None else [int(a) for a in axes.reshape(-1)]


def _squeeze(g: _Graph, n: _OnnxNode) -> list[_Value]:
    x = g.ref(n, 0)
    full = g.full_shape(x)
    axes = _axes(g, n)
    drop = {i for i, d in enumerate(full) if d == 1} if axes is None else {a % len(full) for a in axes}
    if any(full[a] != 1 for a in drop):
        raise ModelError(f"{g.name}: node {n.name!r} (Squeeze) squeezes an axis of size > 1")
    return [g.reshape(n, x, [d for i, d in enumerate(full) if i not in drop])]


def _unsqueeze(g: _Graph, n: _OnnxNode) -> list[_Value]:
    x = g.ref(n, 0)
    full = list(g.full_shape(x))
    axes = _axes(g, n)
    if not axes:
        raise ModelError(f"{g.name}: node {n.name!r} (Unsqueeze) has no axes")
    rank = len(full) + len(axes)
    for a in sorted(a % rank for a in axes):
        full.insert(a, 1)
    return [g.reshape(n, x, full)]


def _transpose(g: _Graph, n: _OnnxNode) -> list[_Value]:
    x = g.ref(n, 0)
    rank = len(g.full_shape(x))
    perm = [int(p) for p in n.attrs.get("perm", range(rank - 1, -1, -1))]
    if g.batched:
        if perm[0] != 0:
            raise n.unsupported(f"perm {perm} moves the batch axis")
        perm = [p - 1 for p in perm[1:]]
    if perm == sorted(perm):
        return [x]
    return [g.emit(n, n.out, Op.TRANSPOSE, [x], attrs={"perm": tuple(perm)})]


def _concat(g: _Graph, n: _OnnxNode) -> list[_Value]:
    xs = [g.value(n, i) for i in range(len(n.inputs))]
    if not all(isinstance(x, _Ref) for x in xs):
        raise n.unsupported("concatenation of a constant with values computed from the input")
    refs = [x for x in xs if isinstance(x, _Ref)]
    axis = g.axis(n, int(n.attrs["axis"]), len(g.full_shape(refs[0])))
    if len(refs) == 1:
        return [refs[0]]
    return [g.emit(n, n.out, Op.CONCAT, refs, attrs={"axis": axis})]


def _slice(g: _Graph, n: _OnnxNode) -> list[_Value]:
    x = g.ref(n, 0)
    full = g.full_shape(x)
    if g.opset < 10:
        starts, ends = n.attrs["starts"], n.attrs["ends"]
        axes, steps = n.attrs.get("axes"), None
    else:
        starts, ends, axes, steps = (g.const(n, i, w) for i, w in enumerate(("starts", "ends", "axes", "steps"), 1))
        if starts is None or ends is None:
            raise ModelError(f"{g.name}: node {n.name!r} (Slice) lacks starts or ends")
    starts = [int(s) for s in np.reshape(starts, -1)]
    ends = [int(e) for e in np.reshape(ends, -1)]
    axes = list(range(len(starts))) if axes is None else [int(a) for a in np.reshape(axes, -1)]
    steps = [1] * len(starts) if steps is None else [int(s) for s in np.reshape(steps, -1)]
    if any(s != 1 for s in steps):
        raise n.unsupported(f"steps {steps} (only step 1 is supported)")
    cuts: list[tuple[int, int, int]] = []
    for a, start, end in zip(axes, starts, ends):
        a %= len(full)
        dim = full[a]
        start = min(max(start + dim if start < 0 else start, 0), dim)
        end = min(max(end + dim if end < 0 else end, 0), dim)
        if end <= start:
            raise n.unsupported(f"empty slice {start}:{end} of axis {a}")
        if (start, end) == (0, dim):
            continue
        cuts.append((g.axis(n, a, len(full)), start, end))
    for k, (axis, start, end) in enumerate(cuts):
        name = n.out if k == len(cuts) - 1 else g.fresh(n.out)
        x = g.emit(n, name, Op.SLICE, [x], attrs={"axis": axis, "start": start, "stop": end})
    return [x]


def _shape(g: _Graph, n: _OnnxNode) -> list[_Value]:
    full = np.array(g.full_shape(g.ref(n, 0)), dtype=np.int64)
    start, end = n.attrs.get("start", 0), n.attrs.get("end")
    return [full[start:end]]


def _size(g: _Graph, n: _OnnxNode) -> list[_Value]:
    return [np.array(math.prod(g.full_shape(g.ref(n, 0))), dtype=np.int64)]


CONVERTERS: dict[str, _Converter] = {
    "Identity": _identity,
    "Dropout": _identity,
    "Cast": _cast,
    "Relu": _activation(Op.RELU),
    "Sigmoid": _activation(Op.SIGMOID),
    "Tanh": _activation(Op.TANH),
    "Add": _arithmetic("Add"),
    "Sub": _arithmetic("Sub"),
    "Mul": _arithmetic("Mul"),
    "Div": _arithmetic("Div"),
    "Neg": _neg,
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Conv": _conv,
    "BatchNormalization": _batchnorm,
    "MaxPool": _pool(Op.MAXPOOL),
    "AveragePool": _pool(Op.AVGPOOL),
    "GlobalMaxPool": _global_pool(Op.MAXPOOL),
    "GlobalAveragePool": _global_pool(Op.AVGPOOL),
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": _transpose,
    "Concat": _concat,
    "Slice": _slice,
    "Shape": _shape,
    "Size": _size,
}
"""ONNX op type -> converter for nodes with at least one input computed from the network
input.  Nodes whose inputs are all constant are folded instead (any standard op)."""


# ---------------------------------------------------------------------------------------
# Constant folding
# ---------------------------------------------------------------------------------------

def _fold(g: _Graph, n: _OnnxNode) -> list[_Value]:
    """Evaluate a node whose inputs are all constants."""
    from onnx import numpy_helper

    if n.op_type == "Constant":
        if "value" in n.attrs:
            return [numpy_helper.to_array(n.attrs["value"])]
        for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                           ("value_int", np.int64), ("value_ints", np.int64)):
            if key in n.attrs:
                return [np.array(n.attrs[key], dtype=dtype)]
    from onnx.reference import ReferenceEvaluator

    feeds = {name: g.env[name] for name in n.inputs if name}
    try:
        outputs = ReferenceEvaluator(n.proto, opsets={"": g.opset}).run(None, feeds)
    except (NotImplementedError, RuntimeError, ValueError, TypeError, IndexError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise n.unsupported(f"cannot fold this node over constants: {first}") from e
    return [np.asarray(o) for o in outputs]


# ---------------------------------------------------------------------------------------
# Simplification: fuse a node into its single-user producer, drop no-ops
# ---------------------------------------------------------------------------------------

def _channel_vector(t: torch.Tensor, shape: tuple[int, ...], axis: int) -> torch.Tensor | None:
    """``t`` (broadcast to ``shape``) as a vector along ``axis``, if it is constant elsewhere."""
    full = torch.broadcast_to(t, shape).movedim(axis, -1).reshape(-1, shape[axis])
    return full[0] if torch.equal(full, full[:1].expand_as(full)) else None


def _fuse_into_weighted(axis: int) -> Callable[[Node, Node], Node | None]:
    """Fold an affine into the preceding linear (channel axis -1) or conv (channel axis 0)."""

    def fuse(producer: Node, affine: Node) -> Node | None:
        if not affine.shape:
            return None
        s = _channel_vector(affine.params["scale"], affine.shape, axis)
        t = _channel_vector(affine.params["shift"], affine.shape, axis)
        if s is None or t is None:
            return None
        w = producer.params["weight"]
        w = w * s if producer.op is Op.LINEAR else w * s[:, None, None, None]
        bias = producer.params.get("bias")
        return replace(producer, name=affine.name, params={"weight": w, "bias": t if bias is None else bias * s + t})

    return fuse


def _fuse_affines(first: Node, second: Node) -> Node:
    s1, t1 = first.params["scale"], first.params["shift"]
    s2, t2 = second.params["scale"], second.params["shift"]
    return replace(second, inputs=first.inputs, params={"scale": s1 * s2, "shift": t1 * s2 + t2})


_FUSIONS: dict[tuple[Op, Op], Callable[[Node, Node], Node | None]] = {
    (Op.LINEAR, Op.AFFINE): _fuse_into_weighted(-1),
    (Op.CONV, Op.AFFINE): _fuse_into_weighted(0),
    (Op.AFFINE, Op.AFFINE): _fuse_affines,
    (Op.RESHAPE, Op.RESHAPE): lambda first, second: replace(second, inputs=first.inputs),
}


def _is_noop(node: Node, source: Node) -> bool:
    if node.op is Op.AFFINE:
        return bool(torch.all(node.params["scale"] == 1) and torch.all(node.params["shift"] == 0))
    if node.op is Op.RESHAPE:
        return node.shape == source.shape
    if node.op is Op.TRANSPOSE:
        return list(node.attrs["perm"]) == sorted(node.attrs["perm"])
    if node.op is Op.SLICE:
        return node.shape == source.shape
    return False


def _simplify(nodes: Sequence[Node], output: str) -> list[Node]:
    """One topological sweep: fuse each node into its single-user producer, drop no-ops."""
    users: dict[str, list[str]] = {n.name: [] for n in nodes}
    for n in nodes:
        for i in n.inputs:
            users[i].append(n.name)
    users[output].append("")  # the network output is a user too
    done: dict[str, Node] = {}
    rename: dict[str, str] = {}

    def absorb(producer: Node, node: Node) -> None:
        """``node`` (same name as before) now replaces ``producer``, which is gone."""
        del done[producer.name]
        for i in producer.inputs:
            users[i] = [node.name if u == producer.name else u for u in users[i]]

    for node in nodes:
        if any(i in rename for i in node.inputs):
            node = replace(node, inputs=tuple(rename.get(i, i) for i in node.inputs))
        while len(node.inputs) == 1:
            producer = done[node.inputs[0]]
            fuse = _FUSIONS.get((producer.op, node.op))
            merged = fuse(producer, node) if fuse and users[producer.name] == [node.name] else None
            if merged is None:
                break
            absorb(producer, merged)
            node = merged
        if len(node.inputs) == 1 and _is_noop(node, source := done[node.inputs[0]]):
            if node.name != output:
                rename[node.name] = source.name
                users[source.name] = [u for u in users[source.name] if u != node.name] + users[node.name]
                continue
            if source.op is not Op.INPUT and users[source.name] == [node.name]:
                node = replace(source, name=node.name)
                absorb(source, node)
        done[node.name] = node
    return list(done.values())


def _reachable(nodes: dict[str, Node], output: str) -> list[Node]:
    """The nodes ``output`` depends on (the input node always kept), in order."""
    keep = {output}
    for node in reversed(list(nodes.values())):
        if node.name in keep:
            keep.update(node.inputs)
    first = next(iter(nodes))
    return [n for n in nodes.values() if n.name in keep or n.name == first]


def _rename(nodes: Sequence[Node], old: str, new: str) -> list[Node]:
    return [replace(n, name=new if n.name == old else n.name,
                    inputs=tuple(new if i == old else i for i in n.inputs)) for n in nodes]


# ---------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------

def _toposort(nodes: Sequence[_OnnxNode], known: set[str], name: str) -> list[_OnnxNode]:
    """ONNX nodes in an order where every input is defined first (stable Kahn)."""
    producer = {o: k for k, n in enumerate(nodes) for o in n.outputs if o}
    waiting: dict[int, int] = {}
    consumers: dict[int, list[int]] = {k: [] for k in range(len(nodes))}
    for k, n in enumerate(nodes):
        deps = {producer[i] for i in n.inputs if i and i not in known and i in producer}
        missing = [i for i in n.inputs if i and i not in known and i not in producer]
        if missing:
            raise ModelError(f"{name}: node {n.name!r} ({n.op_type}) uses undefined tensors {missing[:5]}")
        waiting[k] = len(deps)
        for d in deps:
            consumers[d].append(k)
    ready = [k for k in range(len(nodes)) if waiting[k] == 0]
    order: list[int] = []
    while ready:
        k = min(ready)
        ready.remove(k)
        order.append(k)
        for c in consumers[k]:
            waiting[c] -= 1
            if waiting[c] == 0:
                ready.append(c)
    if len(order) != len(nodes):
        raise ModelError(f"{name}: the graph has a cycle")
    return [nodes[k] for k in order]


def _decode(proto: Any) -> _OnnxNode:
    from onnx import helper

    attrs = {}
    for a in proto.attribute:
        v = helper.get_attribute_value(a)
        attrs[a.name] = v.decode() if isinstance(v, bytes) else v
    name = proto.name or (proto.output[0] if proto.output else proto.op_type)
    return _OnnxNode(proto.op_type, name, tuple(proto.input), tuple(proto.output), attrs, proto)


def _input_shape(value_info: Any, name: str) -> list[int | None]:
    t = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type") or t.elem_type not in _FLOAT_TYPES:
        raise ModelError(f"{name}: input {value_info.name!r} is not a float tensor")
    if not t.HasField("shape"):
        raise ModelError(f"{name}: input {value_info.name!r} has no shape")
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim]


def load_onnx_model(model: onnx.ModelProto, name: str = "network") -> Network:
    """Convert an in-memory ONNX model to a :class:`Network` named ``name``.

    Raises :class:`ModelError` for a malformed graph and :class:`UnsupportedOp` for an op (or
    op variant) with no canonical equivalent.
    """
    from onnx import numpy_helper

    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ModelError(f"{name}: no default-domain opset import")
    try:
        consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    except (ValueError, TypeError, OSError) as e:
        raise ModelError(f"{name}: unreadable initializer: {e}") from e
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise ModelError(f"{name}: expected one graph input besides initializers, found "
                         f"{len(inputs)} ({', '.join(i.name for i in inputs)})")
    if len(graph.output) != 1:
        raise ModelError(f"{name}: expected one graph output, found {len(graph.output)}")
    dims = _input_shape(inputs[0], name)
    batched = len(dims) >= 2 and dims[0] in (None, 1)
    per_sample = dims[1:] if batched else dims
    if any(d is None for d in per_sample):
        raise ModelError(f"{name}: input {inputs[0].name!r} has symbolic dims {dims} beyond the batch axis")
    shape = tuple(int(d) for d in per_sample if d is not None)

    onnx_names = {i.name for i in graph.input} | set(consts) | {o for p in graph.node for o in p.output}
    g = _Graph(name, batched, opset, onnx_names)
    g.env.update(consts)
    g.nodes[inputs[0].name] = Node(inputs[0].name, Op.INPUT, (), shape)
    g.env[inputs[0].name] = _Ref(inputs[0].name, shape)

    for n in _toposort([_decode(p) for p in graph.node], set(g.env), name):
        if n.proto.domain not in ("", "ai.onnx"):
            raise n.unsupported(f"custom domain {n.proto.domain!r}")
        present = [g.env[i] for i in n.inputs if i]
        if all(isinstance(v, np.ndarray) for v in present):
            values = _fold(g, n)
        elif n.op_type in CONVERTERS:
            values = list(CONVERTERS[n.op_type](g, n))
        else:
            raise n.unsupported("no canonical equivalent")
        for k, out in enumerate(n.outputs):
            if out:
                g.env[out] = values[k] if k < len(values) else _Unavailable(n.op_type, n.name, k)

    out_name = graph.output[0].name
    result = g.env.get(out_name)
    if not isinstance(result, _Ref):
        raise ModelError(f"{name}: output {out_name!r} is not computed from the input")
    nodes = _simplify(_reachable(g.nodes, result.name), result.name)
    output = result.name
    if output != out_name and output != inputs[0].name and out_name not in {n.name for n in nodes}:
        nodes, output = _rename(nodes, output, out_name), out_name
    network = Network(tuple(nodes), output, name).to(dtype=torch.float32)
    for node in network.nodes:
        for key, p in node.params.items():
            if not bool(torch.isfinite(p).all()):
                raise ModelError(f"{name}: node {node.name!r}: parameter {key!r} holds NaN or inf values "
                                 f"(or values past float32's range after folding)")
    log.debug("loaded %s: %d nodes, input %s, output %s", name, len(nodes), shape, network.output_shape)
    return network


def load_onnx(path: str | os.PathLike[str]) -> Network:
    """Load an ONNX file as a :class:`Network` named after the file's stem.

    Raises :class:`ModelError` (one line naming the file) when the file is missing, truncated or
    malformed, and :class:`UnsupportedOp` for an op certify cannot represent.
    """
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    try:
        model = onnx.load(os.fspath(path))
    except (OSError, DecodeError, ValueError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"cannot read ONNX model {path}: {reason}") from e
    if not model.graph.node and not model.graph.input:
        raise ModelError(f"cannot read ONNX model {path}: empty or not an ONNX file")
    try:
        return load_onnx_model(model, path.stem)
    except UnsupportedOp:
        raise
    except ModelError as e:
        raise ModelError(f"invalid ONNX model {path}: {e}") from e
