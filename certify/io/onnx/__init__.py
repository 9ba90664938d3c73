"""ONNX -> :class:`~certify.network.Network`, through the public ``onnx`` API only.

* :mod:`~certify.io.onnx.graph`: the values and the IR under construction (the batch convention);
* :mod:`~certify.io.onnx.convert`: :data:`CONVERTERS`, one converter per ONNX op type (modules
  ``elementwise``, ``products``, ``layout``);
* :mod:`~certify.io.onnx.fold`: nodes over constants only are evaluated at load time;
* :mod:`~certify.io.onnx.simplify`: the sweep that fuses affines into linear / conv nodes and
  drops no-ops.

Parameters are folded in float64 and stored as float32; parameters that are not finite are
refused.  ``affine`` parameters ``scale`` and ``shift`` are stored expanded to the full node
shape.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from certify.errors import ModelError, UnsupportedOp
from certify.io.onnx.convert import CONVERTERS, FLOAT_TYPES
from certify.io.onnx.fold import fold
from certify.io.onnx.graph import Graph, OnnxNode, Ref, Unavailable
from certify.io.onnx.simplify import reachable, rename, simplify
from certify.network import Network, Node, Op

if TYPE_CHECKING:
    import onnx

__all__ = ["CONVERTERS", "load_onnx", "load_onnx_model"]

log = logging.getLogger(__name__)


def _toposort(nodes: Sequence[OnnxNode], known: set[str], name: str) -> list[OnnxNode]:
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


def _decode(proto: Any) -> OnnxNode:
    from onnx import helper

    attrs = {}
    for a in proto.attribute:
        v = helper.get_attribute_value(a)
        attrs[a.name] = v.decode() if isinstance(v, bytes) else v
    name = proto.name or (proto.output[0] if proto.output else proto.op_type)
    return OnnxNode(proto.op_type, name, tuple(proto.input), tuple(proto.output), attrs, proto)


def _input_shape(value_info: Any, name: str) -> list[int | None]:
    t = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type") or t.elem_type not in FLOAT_TYPES:
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
    g = Graph(name, batched, opset, onnx_names)
    g.env.update(consts)
    g.nodes[inputs[0].name] = Node(inputs[0].name, Op.INPUT, (), shape)
    g.input_name = inputs[0].name
    g.env[inputs[0].name] = Ref(inputs[0].name, shape)

    for n in _toposort([_decode(p) for p in graph.node], set(g.env), name):
        if n.proto.domain not in ("", "ai.onnx"):
            raise n.unsupported(f"custom domain {n.proto.domain!r}")
        present = [g.env[i] for i in n.inputs if i]
        if all(isinstance(v, np.ndarray) for v in present):
            values = fold(g, n)
        elif n.op_type in CONVERTERS:
            values = list(CONVERTERS[n.op_type](g, n))
        else:
            raise n.unsupported("no canonical equivalent")
        for k, out in enumerate(n.outputs):
            if out:
                g.env[out] = values[k] if k < len(values) else Unavailable(n.op_type, n.name, k)

    out_name = graph.output[0].name
    result = g.env.get(out_name)
    if not isinstance(result, Ref):
        raise ModelError(f"{name}: output {out_name!r} is not computed from the input")
    nodes = simplify(reachable(g.nodes, result.name), result.name)
    output = result.name
    if output != out_name and output != inputs[0].name and out_name not in {n.name for n in nodes}:
        nodes, output = rename(nodes, output, out_name), out_name
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

    from certify.io.files import is_gzipped, plain_name, read_bytes, resolve

    path = resolve(path)  # X.onnx may be stored only as X.onnx.gz (VNN-COMP's layout)
    try:
        model = onnx.load_model_from_string(read_bytes(path)) if is_gzipped(path) else onnx.load(os.fspath(path))
    except (OSError, DecodeError, ValueError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"cannot read ONNX model {path}: {reason}") from e
    if not model.graph.node and not model.graph.input:
        raise ModelError(f"cannot read ONNX model {path}: empty or not an ONNX file")
    try:
        return load_onnx_model(model, plain_name(path).stem)
    except UnsupportedOp:
        raise
    except ModelError as e:
        raise ModelError(f"invalid ONNX model {path}: {e}") from e
