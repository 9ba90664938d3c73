"""The independent oracle: every counterexample is replayed in onnxruntime before it counts.

An :class:`Oracle` evaluates the *original* model file (not certify's IR) on one input of the
problem's input shape.  :func:`replay` snaps the candidate into the problem's box (in the
model's float32 precision), runs it, and returns a replayed :class:`Counterexample` only if the
output really lies in the unsafe set.

One exception: a box that holds *no* float32 point (some input is fixed to a real value such as
0.1 that float32 cannot represent, so every float32 input lies outside the box) can never be
replayed in float32.  Only for such boxes the candidate itself (float64, clipped into the box) is
replayed on a float64 copy of the original model (:func:`float64_copy`: the same graph with
float32 tensors and types switched to float64), and the counterexample records
``precision="float64"``.  Wherever the box holds float32 points the strict float32 replay stays
the rule.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from certify.errors import ModelError
from certify.problem import Box, Problem
from certify.verdict import Counterexample

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)


class Oracle(Protocol):
    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs (flat, float64) of the original model for one input ``x`` (problem input shape)."""
        ...


@runtime_checkable
class Float64Oracle(Protocol):
    """An oracle that can also run the original model in float64 (for boxes without float32 points)."""

    def run_float64(self, x: np.ndarray) -> np.ndarray:
        """Outputs (flat, float64) of a float64 copy of the original model for ``x`` (float64).
        Raises :class:`~certify.errors.ModelError` when no such copy can run."""
        ...


@dataclass(eq=False)
class OnnxOracle:
    """Runs an ONNX file (``X.onnx``, or VNN-COMP's ``X.onnx.gz`` read in memory) in onnxruntime
    (CPU), one sample at a time; the sessions are cached.  :meth:`run_float64` runs a float64
    copy of the same graph (built on first use)."""

    path: Path
    _session: Any = field(default=None, init=False, repr=False)
    _session64: Any = field(default=None, init=False, repr=False)
    _error64: str | None = field(default=None, init=False, repr=False)

    def _open(self) -> Any:
        if self._session is None:
            from certify.io.files import is_gzipped, read_bytes, resolve

            path = resolve(self.path)
            source: str | bytes = read_bytes(path) if is_gzipped(path) else os.fspath(path)
            self._session = session(source)
        return self._session

    def run(self, x: np.ndarray) -> np.ndarray:
        return _run(self._open(), np.asarray(x, dtype=np.float32))

    def _open64(self) -> Any:
        if self._error64 is not None:
            raise ModelError(self._error64)
        if self._session64 is None:
            try:
                copy = float64_copy(_load_proto(self.path))
            except ort_errors() as exc:
                self._error64 = f"no float64 copy of {self.path}: {_first_line(exc)}"
                raise ModelError(self._error64) from exc
            try:
                self._session64 = session(copy.SerializeToString())
            except ort_errors() as exc:  # e.g. no float64 Conv kernel: onnx's reference evaluator
                log.info("the float64 copy of %s runs in onnx's reference evaluator: %s", self.path, _first_line(exc))
                self._session64 = _ReferenceSession(copy)
        return self._session64

    @property
    def float64_runtime(self) -> str:
        """Which program runs the float64 copy (once it has been opened)."""
        return "onnx-reference" if isinstance(self._session64, _ReferenceSession) else "onnxruntime"

    def run_float64(self, x: np.ndarray) -> np.ndarray:
        runner = self._open64()
        try:
            return _run(runner, np.asarray(x, dtype=np.float64))
        except (*ort_errors(), NotImplementedError, RuntimeError, TypeError, IndexError, KeyError) as exc:
            raise ModelError(f"the float64 copy of {self.path} failed to run: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@dataclass(frozen=True)
class _Input:
    name: str
    shape: list[int | str | None]


class _ReferenceSession:
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


def _run(sess: Any, x: np.ndarray) -> np.ndarray:
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


def _load_proto(path: Path) -> onnx.ModelProto:
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


# ----------------------------------------------------------------------------- replay


def holds_float32_point(box: Box) -> bool:
    """Whether some float32 input lies inside ``box``: every coordinate's interval contains a
    float32 value.  False when, e.g., an input is fixed to 0.1 exactly (``lower == upper``)."""
    lo = np.asarray(box.lower, dtype=np.float64)
    hi = np.asarray(box.upper, dtype=np.float64)
    lo32 = lo.astype(np.float32)
    lo32 = np.where(lo32.astype(np.float64) < lo, np.nextafter(lo32, np.float32(np.inf)), lo32)
    return bool(np.all(lo32.astype(np.float64) <= hi))


def snap_into_box(x: np.ndarray, box: Box) -> np.ndarray:
    """``x`` clipped into ``box`` as float32 values that really lie inside it."""
    lo, hi = box.lower.astype(np.float64), box.upper.astype(np.float64)
    x32 = np.clip(np.asarray(x, dtype=np.float64).reshape(lo.shape), lo, hi).astype(np.float32)
    # Rounding to float32 may step just outside the box: move one ulp inward where it did.
    below = x32.astype(np.float64) < lo
    x32 = np.where(below, np.nextafter(x32, np.float32(np.inf)), x32)
    above = x32.astype(np.float64) > hi
    x32 = np.where(above, np.nextafter(x32, np.float32(-np.inf)), x32)
    return x32


def clip_into_box(x: np.ndarray, box: Box) -> np.ndarray:
    """``x`` clipped into ``box`` in float64 (box shape): inside it exactly."""
    lo, hi = box.lower.astype(np.float64), box.upper.astype(np.float64)
    return np.clip(np.asarray(x, dtype=np.float64).reshape(lo.shape), lo, hi)


def replay(oracle: Oracle, problem: Problem, x: np.ndarray) -> Counterexample | None:
    """A replayed counterexample if ``x`` (snapped into the box) violates the problem, else None.

    In float32 (the model's precision) wherever the box holds a float32 point; otherwise in
    float64 on the candidate clipped into the box (see the module docstring)."""
    if not holds_float32_point(problem.box):
        return _replay_float64(oracle, problem, x)
    x32 = snap_into_box(x, problem.box)
    if not problem.box.contains(x32.astype(np.float64)):
        log.warning("candidate for %s cannot be represented inside its box in float32", problem.name)
        return None
    y = oracle.run(x32)
    if problem.violation(y) <= 0.0:
        return Counterexample(x=x32, y=y, replayed=True)
    return None


def _replay_float64(oracle: Oracle, problem: Problem, x: np.ndarray) -> Counterexample | None:
    """The float64 replay of a box without float32 points: ``x`` clipped into the box, run on
    the oracle's float64 copy of the model."""
    name = problem.name or "problem"
    if not isinstance(oracle, Float64Oracle):
        log.warning("%s: the box holds no float32 point and this oracle (%s) cannot replay in float64",
                    name, type(oracle).__name__)
        return None
    x64 = clip_into_box(x, problem.box)
    try:
        y = oracle.run_float64(x64)
    except ModelError as exc:
        log.warning("%s: the box holds no float32 point and %s", name, exc)
        return None
    if problem.violation(y) <= 0.0:
        runtime = getattr(oracle, "float64_runtime", "onnxruntime")
        return Counterexample(x=x64, y=y, replayed=True, precision="float64", runtime=runtime)
    return None
