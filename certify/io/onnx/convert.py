"""ONNX op -> canonical IR nodes: one converter per ONNX op type, in :data:`CONVERTERS`.

A converter handles a node with at least one input computed from the network input (nodes over
constants only are folded, :mod:`certify.io.onnx.fold`).  Ops with a direct IR equivalent map
onto it; the others are rewritten into IR ops whose meaning is the same:

* ``Div`` by a value: ``x * reciprocal(y)``; ``Pow`` with an integer exponent: ``pow`` (and
  ``reciprocal`` for negative exponents);
* ``Max`` / ``Min`` / ``Clip`` / ``Abs``: ``relu`` of differences (``max(a, b) = b + relu(a - b)``);
* ``ReduceMean``: ``reduce_sum`` then a scale; ``Split``: slices; ``Slice`` with steps: ``gather``;
* ``Resize`` / ``Upsample`` in nearest mode by integer factors: ``upsample``;
* broadcasting of every elementwise op: ``expand`` of the smaller operand, constants included.

Ops whose result selects data by comparing values computed from the input (``ArgMax``,
``Where`` and comparisons on such values, ``Gather`` with computed indices, casts of such values
to integers) have no sound linear relaxation here: they are rejected with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from certify.errors import ModelError
from certify.io.onnx.graph import Graph, OnnxNode, Ref, Value
from certify.network import Op

__all__ = ["CONVERTERS", "FLOAT_TYPES"]

Converter = Callable[[Graph, OnnxNode], Sequence[Value]]

FLOAT_TYPES = frozenset({1, 10, 11, 16})  # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


# ---------------------------------------------------------------------------------------
# Elementwise ops
# ---------------------------------------------------------------------------------------

def _identity(g: Graph, n: OnnxNode) -> list[Value]:
    return [g.ref(n, 0)]


def _cast(g: Graph, n: OnnxNode) -> list[Value]:
    if n.attrs.get("to") not in FLOAT_TYPES:
        raise n.unsupported("cast of a value computed from the input to a non-float type "
                            "(data-dependent integer indexing)")
    return [g.ref(n, 0)]


def _activation(op: Op, **defaults: Any) -> Converter:
    def convert(g: Graph, n: OnnxNode) -> list[Value]:
        attrs = {k: float(n.attrs.get(k, v)) for k, v in defaults.items()}
        return [g.emit(n, n.out, op, [g.ref(n, 0)], attrs=attrs)]

    return convert


def _neg(g: Graph, n: OnnxNode) -> list[Value]:
    return [g.affine(n, g.ref(n, 0), -1.0, 0.0)]


def _abs(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    pos = g.emit(n, g.fresh(n.out), Op.RELU, [x])
    neg = g.emit(n, g.fresh(n.out), Op.RELU, [g.affine(n, x, -1.0, 0.0, last=False)])
    return [g.emit(n, n.out, Op.ADD, [pos, neg])]


def _operands(g: Graph, n: OnnxNode) -> tuple[Value, Value]:
    a, b = g.value(n, 0), g.value(n, 1)
    if a is None or b is None:
        raise ModelError(f"{g.name}: node {n.name!r} ({n.op_type}) lacks an operand")
    return a, b


def _out_shape(g: Graph, n: OnnxNode, *shapes: Sequence[int]) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*(tuple(s) for s in shapes)))
    except ValueError:
        raise ModelError(f"{g.name}: node {n.name!r} ({n.op_type}): shapes {list(shapes)} do not "
                         f"broadcast") from None


def _shape_of(g: Graph, v: Value) -> tuple[int, ...]:
    return g.full_shape(v) if isinstance(v, Ref) else tuple(np.shape(v))


def _both(g: Graph, n: OnnxNode, a: Ref, b: Ref) -> tuple[Ref, Ref]:
    full = _out_shape(g, n, g.full_shape(a), g.full_shape(b))
    x, y = g.same_form(n, [a, b], full)
    return x, y


def _arithmetic(kind: str) -> Converter:
    """Add, Sub, Mul, Div between values and constants, with ONNX broadcasting."""

    def convert(g: Graph, n: OnnxNode) -> list[Value]:
        a, b = _operands(g, n)
        if isinstance(a, Ref) and isinstance(b, Ref):
            x, y = _both(g, n, a, b)
            if kind in ("Add", "Sub"):
                return [g.emit(n, n.out, Op.ADD if kind == "Add" else Op.SUB, [x, y])]
            if kind == "Div":
                y = g.emit(n, g.fresh(n.out), Op.RECIPROCAL, [y])
            return [g.emit(n, n.out, Op.MUL, [x, y])]
        full = _out_shape(g, n, _shape_of(g, a), _shape_of(g, b))
        if isinstance(a, Ref):
            x, c = g.broadcast(n, a, full), np.asarray(b, dtype=np.float64)
            if kind == "Div":
                if np.any(c == 0):
                    raise n.unsupported("division by a constant containing zero")
                return [g.affine(n, x, 1.0 / c, 0.0)]
            scale, shift = {"Add": (1.0, c), "Sub": (1.0, -c), "Mul": (c, 0.0)}[kind]
            return [g.affine(n, x, scale, shift)]
        if isinstance(b, Ref):
            x, c = g.broadcast(n, b, full), np.asarray(a, dtype=np.float64)
            if kind == "Div":  # c / x
                r = g.emit(n, g.fresh(n.out), Op.RECIPROCAL, [x])
                return [g.affine(n, r, c, 0.0)]
            scale, shift = {"Add": (1.0, c), "Sub": (-1.0, c), "Mul": (c, 0.0)}[kind]
            return [g.affine(n, x, scale, shift)]
        raise n.unsupported("missing operand")

    return convert


def _sum(g: Graph, n: OnnxNode) -> list[Value]:
    values = [v for v in (g.value(n, i) for i in range(len(n.inputs))) if v is not None]
    refs = [v for v in values if isinstance(v, Ref)]
    consts = [np.asarray(v, dtype=np.float64) for v in values if isinstance(v, np.ndarray)]
    full = _out_shape(g, n, *(_shape_of(g, v) for v in values))
    acc = g.broadcast(n, refs[0], full)
    for r in refs[1:]:
        x, y = g.same_form(n, [acc, r], full)
        acc = g.emit(n, g.fresh(n.out), Op.ADD, [x, y])
    if consts:
        acc = g.affine(n, acc, 1.0, sum(consts))
    return [acc]


def _max_of(g: Graph, n: OnnxNode, a: Value, b: Value, last: bool, larger: bool) -> Ref:
    """``max(a, b) = b + relu(a - b)``, ``min(a, b) = a - relu(a - b)``, constants allowed."""
    if isinstance(a, np.ndarray):
        a, b = b, a
    assert isinstance(a, Ref)
    if isinstance(b, Ref):
        x, y = _both(g, n, a, b)
        r = g.emit(n, g.fresh(n.out), Op.RELU, [g.emit(n, g.fresh(n.out), Op.SUB, [x, y])])
        name = g.name_for(n, last)
        return g.emit(n, name, Op.ADD, [y, r]) if larger else g.emit(n, name, Op.SUB, [x, r])
    full = _out_shape(g, n, g.full_shape(a), np.shape(b))
    x, c = g.broadcast(n, a, full), np.asarray(b, dtype=np.float64)
    if larger:  # c + relu(x - c)
        r = g.emit(n, g.fresh(n.out), Op.RELU, [g.affine(n, x, 1.0, -c, last=False)])
        return g.affine(n, r, 1.0, c, last)
    r = g.emit(n, g.fresh(n.out), Op.RELU, [g.affine(n, x, -1.0, c, last=False)])  # c - relu(c - x)
    return g.affine(n, r, -1.0, c, last)


def _extremum(larger: bool) -> Converter:
    def convert(g: Graph, n: OnnxNode) -> list[Value]:
        values = [g.value(n, i) for i in range(len(n.inputs)) if n.inputs[i]]
        acc = values[0]
        for k, v in enumerate(values[1:]):
            acc = _max_of(g, n, acc, v, k == len(values) - 2, larger)
        return [acc]

    return convert


def _clip(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    if g.opset < 11:
        lo, hi = n.attrs.get("min"), n.attrs.get("max")
    else:
        lo, hi = g.const(n, 1, "min"), g.const(n, 2, "max")
    if lo is None and hi is None:
        return [x]
    if lo is not None:
        x = _max_of(g, n, x, np.asarray(lo, dtype=np.float64), hi is None, larger=True)
    if hi is not None:
        x = _max_of(g, n, x, np.asarray(hi, dtype=np.float64), True, larger=False)
    return [x]


def _pow(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    e = g.const(n, 1, "exponent")
    if e is None or np.size(e) != 1 or not np.all(np.asarray(e) == np.asarray(e).reshape(-1)[0]):
        raise n.unsupported("the exponent must be one constant")
    value = float(np.asarray(e).reshape(-1)[0])
    if value != round(value) or abs(value) > 16:
        raise n.unsupported(f"exponent {value:g} (only integers up to 16 in magnitude)")
    k = int(value)
    if k == 1:
        return [x]
    if k == 0:
        return [g.constant(n, np.ones(g.full_shape(x)))]
    if k < 0:
        x = g.emit(n, g.name_for(n, k == -1), Op.RECIPROCAL, [x])
        if k == -1:
            return [x]
    return [g.emit(n, n.out, Op.POW, [x], attrs={"exponent": abs(k)})]


def _data_dependent(g: Graph, n: OnnxNode) -> list[Value]:
    raise n.unsupported("its result depends on comparing values computed from the input "
                        "(data-dependent selection has no sound linear relaxation here)")


# ---------------------------------------------------------------------------------------
# Products
# ---------------------------------------------------------------------------------------

def _matrix(n: OnnxNode, w: np.ndarray, max_rank: int) -> np.ndarray:
    """A constant MatMul operand as a 2-D matrix (leading axes of size 1 dropped)."""
    if w.ndim > 2 and (w.ndim > max_rank or any(d != 1 for d in w.shape[:-2])):
        raise n.unsupported(f"batched matrix product with a constant of shape {w.shape}")
    return w.reshape(w.shape[-2:]).astype(np.float64) if w.ndim >= 2 else w.astype(np.float64)


def _matmul(g: Graph, n: OnnxNode) -> list[Value]:
    a, b = _operands(g, n)
    if isinstance(a, Ref) and isinstance(b, Ref):
        return [_matmul_values(g, n, a, b)]
    if isinstance(a, Ref) and isinstance(b, np.ndarray):  # x @ W: linear over the last axis
        w = _matrix(n, b, len(g.full_shape(a)))
        if not a.shape:
            raise n.unsupported("matrix product of a scalar")
        if w.ndim == 1:  # x @ w reduces the last axis
            lin = g.emit(n, g.fresh(n.out), Op.LINEAR, [a], {"weight": w[:, None]})
            return [g.reshape(n, lin, g.full_shape(lin)[:-1])]
        return [g.emit(n, n.out, Op.LINEAR, [a], {"weight": w})]
    if isinstance(a, np.ndarray) and isinstance(b, Ref):  # W @ x
        w = _matrix(n, a, len(g.full_shape(b)))
        if w.ndim != 2:
            raise n.unsupported(f"left constant operand of shape {a.shape}")
        if len(g.full_shape(b)) == 1:  # W @ x for a 1-D x
            return [g.emit(n, n.out, Op.LINEAR, [b], {"weight": w.T})]
        if len(b.shape) < 2:  # a batched row: the size-1 batch axis is the rows' axis
            b = g.unbatched(n, b)
        # W @ x over the last two axes: transpose, linear, transpose back.
        perm = (*range(len(b.shape) - 2), len(b.shape) - 1, len(b.shape) - 2)
        t = g.emit(n, g.fresh(n.out), Op.TRANSPOSE, [b], attrs={"perm": perm})
        lin = g.emit(n, g.fresh(n.out), Op.LINEAR, [t], {"weight": w.T})
        return [g.emit(n, n.out, Op.TRANSPOSE, [lin], attrs={"perm": perm})]
    raise n.unsupported("missing operand")


def _matmul_values(g: Graph, n: OnnxNode, a: Ref, b: Ref) -> Ref:
    """``a @ b`` of two values (the bilinear ``matmul``), leading axes broadcast."""
    fa, fb = g.full_shape(a), g.full_shape(b)
    if len(fa) < 2 or len(fb) < 2:
        raise n.unsupported("matrix product of two values where one is 1-D")
    if fa[-1] != fb[-2]:
        raise ModelError(f"{g.name}: node {n.name!r} (MatMul): shapes {fa} and {fb} do not multiply")
    lead = _out_shape(g, n, fa[:-2], fb[:-2])
    x = g.broadcast(n, a, lead + fa[-2:])
    y = g.broadcast(n, b, lead + fb[-2:])
    if not (x.batched and y.batched and len(x.shape) >= 2):
        x, y = g.unbatched(n, x), g.unbatched(n, y)
    return g.emit(n, n.out, Op.MATMUL, [x, y])


def _gemm(g: Graph, n: OnnxNode) -> list[Value]:
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
    return [g.affine(n, g.broadcast(n, lin, _out_shape(g, n, g.full_shape(lin), c.shape)), 1.0,
                     c.astype(np.float64) * n.attrs.get("beta", 1.0))]


# ---------------------------------------------------------------------------------------
# Convolutions and pooling
# ---------------------------------------------------------------------------------------

def _image(g: Graph, n: OnnxNode, x: Ref) -> Ref:
    """``x`` as a batched ``[N, C, H, W]`` value (per-sample ``(C, H, W)``)."""
    full = g.full_shape(x)
    if not g.batched or len(full) != 4 or full[0] != 1:
        raise n.unsupported(f"2-D window ops need an input of shape [N, C, H, W], got {list(full)}")
    return g.reshape(n, x, full, last=False)


def _window(g: Graph, n: OnnxNode, x: Ref, kernel: Sequence[int]) -> dict[str, Any]:
    """stride, padding (t, l, b, r) and dilation of a 2-D conv / pool node."""
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


def _conv(g: Graph, n: OnnxNode) -> list[Value]:
    w = g.const(n, 1, "weight")
    bias = g.const(n, 2, "bias")
    if w is None or w.ndim != 4:
        raise n.unsupported(f"only 2-D convolution is supported (weight shape {None if w is None else w.shape})")
    x = _image(g, n, g.ref(n, 0))
    attrs = _window(g, n, x, w.shape[2:])
    attrs["groups"] = int(n.attrs.get("group", 1))
    params = {"weight": w} if bias is None else {"weight": w, "bias": bias}
    return [g.emit(n, n.out, Op.CONV, [x], params, attrs)]


def _conv_transpose(g: Graph, n: OnnxNode) -> list[Value]:
    w = g.const(n, 1, "weight")
    bias = g.const(n, 2, "bias")
    if w is None or w.ndim != 4:
        raise n.unsupported(f"only 2-D transposed convolution is supported (weight shape "
                            f"{None if w is None else w.shape})")
    if "output_shape" in n.attrs or n.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise n.unsupported("output_shape / auto_pad SAME (give pads instead)")
    x = _image(g, n, g.ref(n, 0))
    stride = tuple(int(s) for s in n.attrs.get("strides", (1, 1)))
    dilation = tuple(int(d) for d in n.attrs.get("dilations", (1, 1)))
    out_pad = tuple(int(p) for p in n.attrs.get("output_padding", (0, 0)))
    pads = tuple(int(p) for p in n.attrs.get("pads", (0, 0, 0, 0)))
    if any(o >= max(s, d) for o, s, d in zip(out_pad, stride, dilation)):
        raise n.unsupported(f"output_padding {list(out_pad)} not below stride or dilation")
    attrs = {"stride": stride, "dilation": dilation, "output_padding": out_pad, "padding": pads,
             "groups": int(n.attrs.get("group", 1))}
    params = {"weight": w} if bias is None else {"weight": w, "bias": bias}
    return [g.emit(n, n.out, Op.CONV_TRANSPOSE, [x], params, attrs)]


def _batchnorm(g: Graph, n: OnnxNode) -> list[Value]:
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


def _pool(op: Op) -> Converter:
    def convert(g: Graph, n: OnnxNode) -> list[Value]:
        x = _image(g, n, g.ref(n, 0))
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


def _global_pool(op: Op) -> Converter:
    def convert(g: Graph, n: OnnxNode) -> list[Value]:
        x = _image(g, n, g.ref(n, 0))
        attrs: dict[str, Any] = {"kernel": x.shape[1:], "stride": x.shape[1:], "padding": (0, 0, 0, 0)}
        if op is Op.AVGPOOL:
            attrs["count_include_pad"] = True
        return [g.emit(n, n.out, op, [x], attrs=attrs)]

    return convert


def _upsample_scales(g: Graph, n: OnnxNode, x: Ref) -> tuple[int, ...]:
    """Integer scale factors per ONNX axis of a nearest-mode Resize / Upsample."""
    full = g.full_shape(x)
    if n.op_type == "Upsample":
        scales = n.attrs.get("scales") if g.opset < 9 else g.const(n, 1, "scales")
        sizes = None
    else:
        scales = g.const(n, 1, "scales") if g.opset == 10 else g.const(n, 2, "scales")
        sizes = None if g.opset == 10 else g.const(n, 3, "sizes")
    if sizes is not None and np.size(sizes):
        factors = [int(s) / d for s, d in zip(np.reshape(sizes, -1), full)]
    elif scales is not None and np.size(scales):
        factors = [float(s) for s in np.reshape(scales, -1)]
    else:
        raise n.unsupported("neither scales nor sizes given")
    if len(factors) != len(full) or any(f < 1 or f != round(f) for f in factors):
        raise n.unsupported(f"scale factors {factors} (only integer upscaling is supported)")
    return tuple(int(f) for f in factors)


def _resize(g: Graph, n: OnnxNode) -> list[Value]:
    """Nearest-neighbour upscaling by integer factors, where it repeats every element."""
    x = g.ref(n, 0)
    mode = n.attrs.get("mode", "nearest")
    if mode != "nearest":
        raise n.unsupported(f"mode {mode!r} (only nearest)")
    if n.op_type == "Resize" and g.opset >= 11:
        transform = n.attrs.get("coordinate_transformation_mode", "half_pixel")
        rounding = n.attrs.get("nearest_mode", "round_prefer_floor")
        repeats = (transform == "asymmetric" and rounding == "floor") or (
            transform in ("half_pixel", "pytorch_half_pixel") and rounding in ("round_prefer_floor",
                                                                               "round_prefer_ceil"))
        if not repeats:
            raise n.unsupported(f"coordinate_transformation_mode {transform!r} with nearest_mode {rounding!r}")
    factors = _upsample_scales(g, n, x)
    if g.batched and x.batched:
        if factors[0] != 1:
            raise n.unsupported("it scales the batch axis")
        factors = factors[1:]
    if all(f == 1 for f in factors):
        return [x]
    return [g.emit(n, n.out, Op.UPSAMPLE, [x], attrs={"scales": factors})]


def _pad(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    mode = n.attrs.get("mode", "constant")
    if mode != "constant":
        raise n.unsupported(f"mode {mode!r} (only constant)")
    full = g.full_shape(x)
    if g.opset < 11:
        pads, value = n.attrs.get("pads"), float(n.attrs.get("value", 0.0))
        axes = None
    else:
        pads = g.const(n, 1, "pads")
        c = g.const(n, 2, "constant_value")
        value = 0.0 if c is None or np.size(c) == 0 else float(np.reshape(c, -1)[0])
        a = g.const(n, 3, "axes")
        axes = None if a is None else [int(v) % len(full) for v in np.reshape(a, -1)]
    if pads is None:
        raise ModelError(f"{g.name}: node {n.name!r} (Pad) has no pads")
    pads = [int(p) for p in np.reshape(pads, -1)]
    axes = list(range(len(full))) if axes is None else axes
    if len(pads) != 2 * len(axes):
        raise ModelError(f"{g.name}: node {n.name!r} (Pad): {len(pads)} pads for {len(axes)} axes")
    per_axis = {a: (pads[k], pads[k + len(axes)]) for k, a in enumerate(axes)}
    if any(p < 0 for pair in per_axis.values() for p in pair):
        raise n.unsupported("negative pads (cropping)")
    offset = 1 if g.batched and x.batched else 0
    if offset and per_axis.get(0, (0, 0)) != (0, 0):
        raise n.unsupported("it pads the batch axis")
    spec = tuple(per_axis.get(a + offset, (0, 0)) for a in range(len(x.shape)))
    if all(p == (0, 0) for p in spec):
        return [x]
    return [g.emit(n, n.out, Op.PAD, [x], attrs={"pads": spec, "value": value})]


# ---------------------------------------------------------------------------------------
# Shapes, selections, reductions
# ---------------------------------------------------------------------------------------

def _flatten(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    full = g.full_shape(x)
    axis = int(n.attrs.get("axis", 1))
    if not -len(full) <= axis <= len(full):
        raise ModelError(f"{g.name}: node {n.name!r} (Flatten): axis {axis} out of range")
    axis += len(full) if axis < 0 else 0
    return [g.reshape(n, x, (math.prod(full[:axis]), math.prod(full[axis:])))]


def _reshape(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    target = g.const(n, 1, "shape")
    if target is None:
        raise ModelError(f"{g.name}: node {n.name!r} (Reshape) has no shape")
    full = g.full_shape(x)
    dims = [int(d) for d in target.reshape(-1)]
    if not n.attrs.get("allowzero", 0):
        dims = [full[i] if d == 0 and i < len(full) else d for i, d in enumerate(dims)]
    if dims.count(-1) > 1:
        raise ModelError(f"{g.name}: node {n.name!r} (Reshape) has several -1 dims")
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if known == 0 or math.prod(full) % known:
            raise ModelError(f"{g.name}: node {n.name!r} (Reshape) cannot reshape {full} to {dims}")
        dims[dims.index(-1)] = math.prod(full) // known
    return [g.reshape(n, x, dims)]


def _axes(g: Graph, n: OnnxNode) -> list[int] | None:
    """``axes`` of Squeeze / Unsqueeze / reductions: an attribute in old opsets, an input since."""
    if "axes" in n.attrs:
        return [int(a) for a in n.attrs["axes"]]
    axes = g.const(n, 1, "axes") if len(n.inputs) > 1 else None
    return None if axes is None else [int(a) for a in axes.reshape(-1)]


def _squeeze(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    full = g.full_shape(x)
    axes = _axes(g, n)
    drop = {i for i, d in enumerate(full) if d == 1} if axes is None else {a % len(full) for a in axes}
    if any(full[a] != 1 for a in drop):
        raise ModelError(f"{g.name}: node {n.name!r} (Squeeze) squeezes an axis of size > 1")
    return [g.reshape(n, x, [d for i, d in enumerate(full) if i not in drop])]


def _unsqueeze(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    full = list(g.full_shape(x))
    axes = _axes(g, n)
    if not axes:
        raise ModelError(f"{g.name}: node {n.name!r} (Unsqueeze) has no axes")
    rank = len(full) + len(axes)
    for a in sorted(a % rank for a in axes):
        full.insert(a, 1)
    return [g.reshape(n, x, full)]


def _transpose(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    full = g.full_shape(x)
    rank = len(full)
    perm = [int(p) for p in n.attrs.get("perm", range(rank - 1, -1, -1))]
    if sorted(perm) != list(range(rank)):
        raise ModelError(f"{g.name}: node {n.name!r} (Transpose): perm {perm} for rank {rank}")
    out = tuple(full[p] for p in perm)
    moved = [p for p in perm if full[p] != 1]
    if moved == sorted(moved):  # only axes of size 1 move: the data keeps its order
        return [g.reshape(n, x, out)]
    if g.batched and x.batched and perm[0] == 0:
        return [g.emit(n, n.out, Op.TRANSPOSE, [x], attrs={"perm": tuple(p - 1 for p in perm[1:])})]
    y = g.unbatched(n, x) if g.batched and x.batched else x
    t = g.emit(n, g.fresh(n.out), Op.TRANSPOSE, [y], attrs={"perm": tuple(perm)}, batched=False)
    return [g.reshape(n, t, out)]


def _concat(g: Graph, n: OnnxNode) -> list[Value]:
    values = [g.value(n, i) for i in range(len(n.inputs)) if n.inputs[i]]
    if not any(isinstance(v, Ref) for v in values):
        raise n.unsupported("missing operand")
    shapes = [_shape_of(g, v) for v in values]
    rank = len(shapes[0])
    axis = int(n.attrs["axis"])
    if not -rank <= axis < rank:
        raise ModelError(f"{g.name}: node {n.name!r} (Concat): axis {axis} out of range")
    axis %= rank
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    batched = g.canonical(out)
    refs = []
    for v, shape in zip(values, shapes):
        if shape[axis] == 0:
            continue
        r = v if isinstance(v, Ref) else g.constant(n, v)
        r = g.reshape(n, r, shape, last=False) if batched else g.unbatched(n, r)
        refs.append(r)
    if len(refs) == 1:
        return [refs[0]]
    return [g.emit(n, n.out, Op.CONCAT, refs, attrs={"axis": axis - 1 if batched else axis}, batched=batched)]


def _gather_axis(g: Graph, n: OnnxNode, x: Ref, axis: int, indices: np.ndarray, last: bool) -> Ref:
    """``x`` taken at ``indices`` (any shape, constant) along the ONNX ``axis``."""
    full = g.full_shape(x)
    dim = full[axis]
    flat = [int(i) + dim if i < 0 else int(i) for i in np.reshape(indices, -1)]
    if any(not 0 <= i < dim for i in flat):
        raise ModelError(f"{g.name}: node {n.name!r} ({n.op_type}): index out of range for size {dim}")
    out = full[:axis] + tuple(np.shape(indices)) + full[axis + 1:]
    if g.batched and x.batched and axis == 0:  # every index is 0: a reshape
        return g.reshape(n, x, out, last)
    if flat == list(range(dim)) and len(np.shape(indices)) == 1:
        return x
    paxis = g.axis(n, axis, x)
    if flat == list(range(flat[0], flat[0] + len(flat))):  # a contiguous range: a slice
        picked = g.emit(n, g.fresh(n.out), Op.SLICE, [x],
                        attrs={"axis": paxis, "start": flat[0], "stop": flat[0] + len(flat)})
    else:
        picked = g.emit(n, g.fresh(n.out), Op.GATHER, [x], attrs={"axis": paxis, "indices": tuple(flat)})
    return g.reshape(n, picked, out, last)


def _gather(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.value(n, 0)
    idx = g.value(n, 1)
    if not isinstance(idx, np.ndarray):
        raise n.unsupported("indices computed from the input (data-dependent indexing)")
    if not isinstance(x, Ref):
        raise n.unsupported("missing operand")
    axis = int(n.attrs.get("axis", 0)) % len(g.full_shape(x))
    return [_gather_axis(g, n, x, axis, idx, True)]


def _slice(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    full = g.full_shape(x)
    if g.opset < 10:
        starts, ends = n.attrs["starts"], n.attrs["ends"]
        axes, steps = n.attrs.get("axes"), None
    else:
        for i, what in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")):
            if isinstance(g.value(n, i), Ref):
                raise n.unsupported(f"{what} computed from the input (data-dependent indexing)")
        starts, ends, axes, steps = (g.const(n, i, w) for i, w in enumerate(("starts", "ends", "axes", "steps"), 1))
        if starts is None or ends is None:
            raise ModelError(f"{g.name}: node {n.name!r} (Slice) lacks starts or ends")
    starts = [int(s) for s in np.reshape(starts, -1)]
    ends = [int(e) for e in np.reshape(ends, -1)]
    axes = list(range(len(starts))) if axes is None else [int(a) % len(full) for a in np.reshape(axes, -1)]
    steps = [1] * len(starts) if steps is None else [int(s) for s in np.reshape(steps, -1)]
    cuts = []
    for a, start, end, step in zip(axes, starts, ends, steps):
        if step == 0:
            raise ModelError(f"{g.name}: node {n.name!r} (Slice): step 0")
        picked = list(range(full[a]))[slice(start, end, step)]
        if not picked:
            raise n.unsupported(f"empty slice of axis {a}")
        if picked != list(range(full[a])):
            cuts.append((a, picked))
    for k, (a, picked) in enumerate(cuts):
        x = _gather_axis(g, n, x, a, np.array(picked), k == len(cuts) - 1)
    return [x]


def _split(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    full = g.full_shape(x)
    axis = int(n.attrs.get("axis", 0)) % len(full)
    sizes = n.attrs.get("split")
    if sizes is None and len(n.inputs) > 1 and n.inputs[1]:
        sizes = g.const(n, 1, "split")
    count = len(n.outputs)
    if sizes is None:
        if full[axis] % count and "num_outputs" not in n.attrs:
            raise ModelError(f"{g.name}: node {n.name!r} (Split): {full[axis]} not divisible by {count}")
        size = -(-full[axis] // count)
        sizes = [min(size, full[axis] - k * size) for k in range(count)]
    sizes = [int(s) for s in np.reshape(sizes, -1)]
    if sum(sizes) != full[axis] or len(sizes) != count:
        raise ModelError(f"{g.name}: node {n.name!r} (Split): sizes {sizes} for axis of size {full[axis]}")
    outs: list[Value] = []
    start = 0
    for k, size in enumerate(sizes):
        index = np.arange(start, start + size)
        sub = OnnxNode(n.op_type, n.name, n.inputs, (n.outputs[k],), n.attrs, n.proto)
        outs.append(_gather_axis(g, sub, x, axis, index, True) if size != full[axis] else x)
        start += size
    return outs


def _reduce(mean: bool) -> Converter:
    def convert(g: Graph, n: OnnxNode) -> list[Value]:
        x = g.ref(n, 0)
        full = g.full_shape(x)
        raw = n.attrs.get("axes")
        if raw is None and len(n.inputs) > 1 and n.inputs[1]:
            raw = g.const(n, 1, "axes")
        if raw is None or np.size(raw) == 0:
            if n.attrs.get("noop_with_empty_axes", 0):
                return [x]
            raw = list(range(len(full)))
        axes = sorted({int(a) % len(full) for a in np.reshape(np.asarray(raw), -1)})
        keep = bool(n.attrs.get("keepdims", 1))
        out = tuple(1 if a in axes else d for a, d in enumerate(full)) if keep else tuple(
            d for a, d in enumerate(full) if a not in axes)
        offset = 1 if g.batched and x.batched else 0
        per_sample = tuple(a - offset for a in axes if a >= offset)
        y = x
        if per_sample:
            y = g.emit(n, g.fresh(n.out), Op.REDUCE_SUM, [x], attrs={"axes": per_sample, "keepdims": True})
        if mean:
            count = math.prod(full[a] for a in axes)
            y = g.affine(n, y, 1.0 / count, 0.0, last=False)
        return [g.reshape(n, y, out)]

    return convert


def _expand(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    shape = g.const(n, 1, "shape")
    if shape is None:
        raise ModelError(f"{g.name}: node {n.name!r} (Expand) has no shape")
    full = _out_shape(g, n, g.full_shape(x), [int(d) for d in np.reshape(shape, -1)])
    return [g.broadcast(n, x, full)]


def _softmax(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    full = g.full_shape(x)
    axis = int(n.attrs.get("axis", -1 if g.opset >= 13 else 1)) % len(full)
    if g.opset < 13 and axis != len(full) - 1:  # the old "coerced to 2-D" meaning
        flat = g.reshape(n, x, full[:axis] + (math.prod(full[axis:]),), last=False)
        s = g.emit(n, g.fresh(n.out), Op.SOFTMAX, [flat], attrs={"axis": g.axis(n, axis, flat)})
        return [g.reshape(n, s, full)]
    return [g.emit(n, n.out, Op.SOFTMAX, [x], attrs={"axis": g.axis(n, axis, x)})]


def _shape(g: Graph, n: OnnxNode) -> list[Value]:
    full = np.array(g.full_shape(g.ref(n, 0)), dtype=np.int64)
    start, end = n.attrs.get("start", 0), n.attrs.get("end")
    return [full[start:end]]


def _size(g: Graph, n: OnnxNode) -> list[Value]:
    return [np.array(math.prod(g.full_shape(g.ref(n, 0))), dtype=np.int64)]


def _constant_of_shape(g: Graph, n: OnnxNode) -> list[Value]:
    raise n.unsupported("shape computed from the input")


CONVERTERS: dict[str, Converter] = {
    "Identity": _identity,
    "Dropout": _identity,
    "Cast": _cast,
    "Relu": _activation(Op.RELU),
    "Sigmoid": _activation(Op.SIGMOID),
    "Tanh": _activation(Op.TANH),
    "Sign": _activation(Op.SIGN),
    "Sin": _activation(Op.SIN),
    "Cos": _activation(Op.COS),
    "Floor": _activation(Op.FLOOR),
    "Exp": _activation(Op.EXP),
    "Reciprocal": _activation(Op.RECIPROCAL),
    "LeakyRelu": _activation(Op.LEAKY_RELU, alpha=0.01),
    "Abs": _abs,
    "Add": _arithmetic("Add"),
    "Sub": _arithmetic("Sub"),
    "Mul": _arithmetic("Mul"),
    "Div": _arithmetic("Div"),
    "Sum": _sum,
    "Max": _extremum(larger=True),
    "Min": _extremum(larger=False),
    "Clip": _clip,
    "Pow": _pow,
    "Neg": _neg,
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "BatchNormalization": _batchnorm,
    "MaxPool": _pool(Op.MAXPOOL),
    "AveragePool": _pool(Op.AVGPOOL),
    "GlobalMaxPool": _global_pool(Op.MAXPOOL),
    "GlobalAveragePool": _global_pool(Op.AVGPOOL),
    "Resize": _resize,
    "Upsample": _resize,
    "Pad": _pad,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": _transpose,
    "Concat": _concat,
    "Slice": _slice,
    "Gather": _gather,
    "Split": _split,
    "ReduceSum": _reduce(mean=False),
    "ReduceMean": _reduce(mean=True),
    "Expand": _expand,
    "Softmax": _softmax,
    "Shape": _shape,
    "Size": _size,
    "ConstantOfShape": _constant_of_shape,
    "ArgMax": _data_dependent,
    "ArgMin": _data_dependent,
    "Where": _data_dependent,
    "Equal": _data_dependent,
    "Greater": _data_dependent,
    "Less": _data_dependent,
    "GreaterOrEqual": _data_dependent,
    "LessOrEqual": _data_dependent,
    "TopK": _data_dependent,
    "NonZero": _data_dependent,
    "ScatterND": _data_dependent,
}
"""ONNX op type -> converter for nodes with at least one input computed from the network
input.  Nodes whose inputs are all constant are folded instead (any standard op)."""
