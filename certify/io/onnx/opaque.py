"""A model certify cannot convert, kept whole: a :class:`~certify.network.Network` of two nodes,
the input and one ``opaque`` node that runs the original ONNX model in onnxruntime.

No bound method applies to it, so nothing is ever proved about it; the ``sample`` engine can
still look for counterexamples (every one is replayed like any other), and every other engine
declines it with the reason the conversion failed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from certify.errors import ModelError
from certify.network import Network, Node, Op

__all__ = ["opaque_network"]


def _static(value_info: Any, what: str, name: str) -> tuple[int, ...]:
    t = value_info.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim]
    if len(dims) >= 2 and dims[0] in (None, 1):
        dims = dims[1:]
    if any(d is None for d in dims):
        raise ModelError(f"{name}: the {what} has symbolic dims beyond the batch axis")
    return tuple(int(d) for d in dims if d is not None)


def opaque_network(model_bytes: bytes, name: str, reason: str) -> Network:
    """``input -> opaque`` for the serialized ONNX model ``model_bytes``; ``reason`` says why it
    was not converted.  The input and output shapes are the model's (batch axis dropped)."""
    import onnx

    from certify.io.runtime import session

    proto = onnx.load_model_from_string(model_bytes)
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1 or len(proto.graph.output) < 1:
        raise ModelError(f"{name}: expected one graph input and an output")
    in_shape = _static(inputs[0], "input", name)
    sess = session(model_bytes)
    feed_shape = [d if isinstance(d, int) and d > 0 else 1 for d in sess.get_inputs()[0].shape]
    feed_name = sess.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        out = sess.run(None, {feed_name: np.asarray(x, dtype=np.float32).reshape(feed_shape)})[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)

    size = run(np.zeros(in_shape, dtype=np.float32)).size
    try:
        out_shape = _static(proto.graph.output[0], "output", name)
    except ModelError:  # symbolic output dims: the flat size it computes
        out_shape = (size,)
    if math.prod(out_shape) != size:
        out_shape = (size,)
    nodes = (Node(inputs[0].name, Op.INPUT, (), in_shape),
             Node("model", Op.OPAQUE, (inputs[0].name,), out_shape, {}, {"run": run, "reason": reason}))
    return Network(nodes, "model", name)
