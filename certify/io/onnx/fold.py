"""Constant folding: ONNX nodes whose inputs are all constants are evaluated at load time.

Shape sub-graphs that exporters emit for ``Flatten`` / ``Reshape`` (``Shape``, ``Gather``,
``Unsqueeze``, ``Concat``...) disappear this way.  A few ops are evaluated here in numpy (the
reference evaluator of some ``onnx`` releases rejects old-opset ``Unsqueeze`` / ``Squeeze``
with an ``axes`` attribute); every other op goes to ``onnx.reference``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from certify.io.onnx.graph import Graph, OnnxNode, Value

__all__ = ["fold"]


def _axes(g: Graph, n: OnnxNode) -> list[int] | None:
    if "axes" in n.attrs:
        return [int(a) for a in n.attrs["axes"]]
    if len(n.inputs) > 1 and n.inputs[1]:
        return [int(a) for a in np.reshape(g.env[n.inputs[1]], -1)]
    return None


def _unsqueeze(g: Graph, n: OnnxNode) -> list[Value]:
    x = np.asarray(g.env[n.inputs[0]])
    axes = _axes(g, n) or []
    rank = x.ndim + len(axes)
    shape = list(x.shape)
    for a in sorted(a % rank for a in axes):
        shape.insert(a, 1)
    return [x.reshape(shape)]


def _squeeze(g: Graph, n: OnnxNode) -> list[Value]:
    x = np.asarray(g.env[n.inputs[0]])
    axes = _axes(g, n)
    if axes is None:
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(a % x.ndim for a in axes))]


_NUMPY: dict[str, Callable[[Graph, OnnxNode], list[Value]]] = {"Unsqueeze": _unsqueeze, "Squeeze": _squeeze}


def fold(g: Graph, n: OnnxNode) -> list[Value]:
    """Evaluate a node whose inputs are all constants."""
    from onnx import numpy_helper

    if n.op_type == "Constant":
        if "value" in n.attrs:
            return [numpy_helper.to_array(n.attrs["value"])]
        for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                           ("value_int", np.int64), ("value_ints", np.int64)):
            if key in n.attrs:
                return [np.array(n.attrs[key], dtype=dtype)]
    if n.op_type in _NUMPY:
        try:
            return _NUMPY[n.op_type](g, n)
        except (ValueError, IndexError) as e:
            raise n.unsupported(f"cannot fold this node over constants: {e}") from e
    from onnx.reference import ReferenceEvaluator

    feeds = {name: g.env[name] for name in n.inputs if name}
    try:
        outputs = ReferenceEvaluator(n.proto, opsets={"": g.opset}).run(None, feeds)
    except (NotImplementedError, RuntimeError, ValueError, TypeError, IndexError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise n.unsupported(f"cannot fold this node over constants: {first}") from e
    return [np.asarray(o) for o in outputs]
