"""Running ONNX models as they are: onnxruntime sessions, onnx's reference evaluator, and the
float64 copy of a model (the same graph with its float32 tensors and types switched to float64)
that :mod:`certify.replay` runs for boxes holding no float32 point."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

__all__ = ["ReferenceSession", "first_line", "float64_copy", "load_proto", "ort_errors", "run_session", "session"]


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@dataclass(frozen=True)
class _Input:
    name: str
    shape: list[int | str | None]


class ReferenceSession:
    """``onnx.reference``'s evaluator behind the two calls :func:`_run` makes of an onnxruntime
    session (for float64 copies with ops onnxruntime has no float64 kernel for)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        from onnx.reference import ReferenceEvaluator

        inits = {t.name for t in model.graph.initializer}
        first = next(i for i in model.graph.input if i.name not in inits)
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in first.type.tensor_type.shape.dim]
        self._input = _Input(first.name, dims)
        self._evaluator = ReferenceEvaluator(model)

    def get_inputs(self) -> list[_Input]:
        return [self._input]

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._evaluator.run(names, feeds)


def session(source: str | bytes) -> Any:
    """An onnxruntime CPU session (one thread) on a model file path or serialized model bytes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def run_session(sess: Any, x: np.ndarray) -> np.ndarray:
    """The first output (flat, float64) of ``sess`` on ``x`` fed to its first input, whose
    symbolic or batch dims count as 1; ``x`` keeps its dtype."""
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    out = sess.run(None, {inp.name: x.reshape(shape)})[0]
    return np.asarray(out, dtype=np.float64).reshape(-1)


def ort_errors() -> tuple[type[BaseException], ...]:
    """The exceptions onnxruntime raises for a model it cannot load or run (its own classes
    derive from ``Exception`` directly), and onnx's for a model it cannot read."""
    from google.protobuf.message import DecodeError
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return (state.Fail, state.InvalidArgument, state.InvalidGraph, state.InvalidProtobuf,
            state.NotImplemented, state.RuntimeException, OSError, DecodeError, ValueError)


def load_proto(path: Path) -> onnx.ModelProto:
    import onnx

    from certify.io.files import is_gzipped, read_bytes, resolve

    path = resolve(path)
    return onnx.load_model_from_string(read_bytes(path)) if is_gzipped(path) else onnx.load(os.fspath(path))


# ----------------------------------------------------------------------------- the float64 copy

#: (op, input index) slots the ONNX standard types as float32 only: their constants stay float32.
FLOAT32_ONLY_INPUTS: frozenset[tuple[str, int]] = frozenset({("Resize", 2), ("Upsample", 1)})

#: Node attributes that name an element type (``Cast.to``, ``RandomNormal.dtype``...).
_TYPE_ATTRIBUTES = frozenset({"to", "dtype"})


def float64_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` computing in float64: every float32 initializer and Constant /
    ConstantOfShape tensor cast to float64, the graph's float32 inputs, outputs and value_info
    switched to double, ``Cast(to=FLOAT)`` (and ``dtype=FLOAT`` attributes) switched to DOUBLE,
    subgraphs likewise.  ``model`` is not changed.  Ops with no double kernel in onnxruntime
    (Conv, AveragePool...) make the copy fail to load, which the caller reports."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    _graph_to_float64(out.graph)
    return out


def _graph_to_float64(graph: onnx.GraphProto) -> None:
    from onnx import TensorProto

    keep = {name for node in graph.node for k, name in enumerate(node.input)
            if (node.op_type, k) in FLOAT32_ONLY_INPUTS}
    for k, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT and tensor.name not in keep:
            graph.initializer[k].CopyFrom(_tensor_to_float64(tensor))
    for info in (*graph.input, *graph.output, *graph.value_info):
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type == TensorProto.FLOAT:
            info.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in graph.node:
        if not set(node.output) & keep:
            _node_to_float64(node)
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                _graph_to_float64(sub)


def _node_to_float64(node: onnx.NodeProto) -> None:
    from onnx import AttributeProto, TensorProto, helper

    for k, attr in enumerate(node.attribute):
        if attr.type == AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
            attr.t.CopyFrom(_tensor_to_float64(attr.t))
        elif attr.name in _TYPE_ATTRIBUTES and attr.type == AttributeProto.INT and attr.i == TensorProto.FLOAT:
            attr.i = TensorProto.DOUBLE
        elif node.op_type == "Constant" and attr.name in ("value_float", "value_floats"):
            values = np.float64(attr.f) if attr.name == "value_float" else np.asarray(attr.floats, np.float64)
            node.attribute[k].CopyFrom(helper.make_attribute("value", _array_tensor(values, "")))


def _tensor_to_float64(tensor: onnx.TensorProto) -> onnx.TensorProto:
    from onnx import numpy_helper

    return _array_tensor(numpy_helper.to_array(tensor).astype(np.float64), tensor.name)


def _array_tensor(values: np.ndarray, name: str) -> onnx.TensorProto:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(values, dtype=np.float64), name)
