"""Converters of elementwise ops: activations, arithmetic with broadcasting, max/min/clip, pow,
and the data-dependent ops rejected with their reason."""

from __future__ import annotations

from typing import Any

import numpy as np

from certify.io.onnx.convert.common import Converter, both, operands, out_shape, shape_of
from certify.io.onnx.graph import Graph, OnnxNode, Ref, Value
from certify.network import Op

FLOAT_TYPES = frozenset({1, 10, 11, 16})  # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


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


def _arithmetic(kind: str) -> Converter:
    """Add, Sub, Mul, Div between values and constants, with ONNX broadcasting."""

    def convert(g: Graph, n: OnnxNode) -> list[Value]:
        a, b = operands(g, n)
        if isinstance(a, Ref) and isinstance(b, Ref):
            x, y = both(g, n, a, b)
            if kind in ("Add", "Sub"):
                return [g.emit(n, n.out, Op.ADD if kind == "Add" else Op.SUB, [x, y])]
            if kind == "Div":
                y = g.emit(n, g.fresh(n.out), Op.RECIPROCAL, [y])
            return [g.emit(n, n.out, Op.MUL, [x, y])]
        full = out_shape(g, n, shape_of(g, a), shape_of(g, b))
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
    full = out_shape(g, n, *(shape_of(g, v) for v in values))
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
        x, y = both(g, n, a, b)
        r = g.emit(n, g.fresh(n.out), Op.RELU, [g.emit(n, g.fresh(n.out), Op.SUB, [x, y])])
        name = g.name_for(n, last)
        return g.emit(n, name, Op.ADD, [y, r]) if larger else g.emit(n, name, Op.SUB, [x, r])
    full = out_shape(g, n, g.full_shape(a), np.shape(b))
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
