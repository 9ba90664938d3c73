"""What the converters share: the converter type, operands, broadcast shapes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from certify.errors import ModelError
from certify.io.onnx.graph import Graph, OnnxNode, Ref, Value

Converter = Callable[[Graph, OnnxNode], Sequence[Value]]


def operands(g: Graph, n: OnnxNode) -> tuple[Value, Value]:
    a, b = g.value(n, 0), g.value(n, 1)
    if a is None or b is None:
        raise ModelError(f"{g.name}: node {n.name!r} ({n.op_type}) lacks an operand")
    return a, b


def out_shape(g: Graph, n: OnnxNode, *shapes: Sequence[int]) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*(tuple(s) for s in shapes)))
    except ValueError:
        raise ModelError(f"{g.name}: node {n.name!r} ({n.op_type}): shapes {list(shapes)} do not "
                         f"broadcast") from None


def shape_of(g: Graph, v: Value) -> tuple[int, ...]:
    return g.full_shape(v) if isinstance(v, Ref) else tuple(np.shape(v))


def both(g: Graph, n: OnnxNode, a: Ref, b: Ref) -> tuple[Ref, Ref]:
    full = out_shape(g, n, g.full_shape(a), g.full_shape(b))
    x, y = g.same_form(n, [a, b], full)
    return x, y
