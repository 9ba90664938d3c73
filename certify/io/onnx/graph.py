"""The IR under construction while an ONNX graph is converted: values, emission, broadcasting.

Batch convention.  IR shapes are per sample.  When the ONNX input has rank >= 2 and its first
dimension is 1 or symbolic, the model is *batched*: that leading dimension is the batch axis, of
size 1 as far as the ONNX graph is concerned.  A value computed from the input is a :class:`Ref`
with its per-sample ``shape`` and a flag ``batched``: a batched value's ONNX shape is
``(1, *shape)``; an unbatched one's is ``shape`` itself.  Values become unbatched when the
graph moves or drops the size-1 batch axis (``Transpose`` with ``perm[0] != 0``, a ``Reshape``
to ``[n, 1]``, a ``Gather`` on axis 0...): with a batch of one, those are plain data moves.
Whenever an ONNX shape starts with 1 it is stored batched again (:meth:`Graph.canonical`), so a
graph that transposes a row vector to a column and back ends batched, as it started.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Union

import numpy as np
import torch

from certify.errors import ModelError, UnsupportedOp
from certify.network import FORWARD, Node, Op


@dataclass(frozen=True, slots=True)
class Ref:
    """A value computed from the network input: the IR node that holds it, its per-sample
    shape and whether its ONNX shape carries the batch axis in front (see the module doc)."""

    name: str
    shape: tuple[int, ...]
    batched: bool = True

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True, slots=True)
class Unavailable:
    """An output of a node that certify does not produce (e.g. MaxPool's indices)."""

    op_type: str
    node_name: str
    index: int


Value = Union[Ref, np.ndarray, Unavailable]


@dataclass(frozen=True, slots=True)
class OnnxNode:
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


class Graph:
    """The IR under construction: nodes in topological order and the ONNX-name environment."""

    def __init__(self, name: str, batched: bool, opset: int, onnx_names: set[str]) -> None:
        self.name = name
        self.batched = batched
        self.opset = opset
        self.nodes: dict[str, Node] = {}
        self.env: dict[str, Value] = {}
        self.input_name = ""
        self._taken = set(onnx_names)

    # -- values --------------------------------------------------------------------------
    def value(self, n: OnnxNode, i: int) -> Value | None:
        """The value of input ``i`` of ``n`` (None when the optional input is absent)."""
        if i >= len(n.inputs) or not n.inputs[i]:
            return None
        v = self.env[n.inputs[i]]
        if isinstance(v, Unavailable):
            raise UnsupportedOp(v.op_type, v.node_name, f"its output #{v.index} is not supported")
        return v

    def ref(self, n: OnnxNode, i: int) -> Ref:
        v = self.value(n, i)
        if not isinstance(v, Ref):
            raise n.unsupported(f"input #{i} must be computed from the network input")
        return v

    def const(self, n: OnnxNode, i: int, what: str) -> np.ndarray | None:
        v = self.value(n, i)
        if v is not None and not isinstance(v, np.ndarray):
            raise n.unsupported(f"{what} (input #{i}) must be a constant")
        return v

    def full_shape(self, x: Ref) -> tuple[int, ...]:
        """The ONNX shape of ``x`` (with the batch axis of size 1 when ``x`` is batched)."""
        return (1, *x.shape) if self.batched and x.batched else x.shape

    def axis(self, n: OnnxNode, axis: int, x: Ref) -> int:
        """Per-sample axis of ``x`` for the ONNX ``axis``."""
        rank = len(self.full_shape(x))
        if not -rank <= axis < rank:
            raise ModelError(f"{self.name}: node {n.name!r} ({n.op_type}): axis {axis} out of range")
        axis %= rank
        if self.batched and x.batched:
            if axis == 0:
                raise n.unsupported("it acts on the batch axis")
            axis -= 1
        return axis

    def canonical(self, full: Sequence[int]) -> bool:
        """Whether a value of ONNX shape ``full`` is stored batched (see the module doc)."""
        return self.batched and len(full) >= 1 and full[0] == 1

    # -- emission ----------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        k = 0
        while f"{base}/{k}" in self._taken:
            k += 1
        self._taken.add(f"{base}/{k}")
        return f"{base}/{k}"

    def emit(self, n: OnnxNode, name: str, op: Op, inputs: Sequence[Ref],
             params: dict[str, np.ndarray] | None = None, attrs: dict[str, Any] | None = None,
             batched: bool | None = None) -> Ref:
        """Add an IR node; its shape is what :data:`FORWARD` computes on a zero sample.
        ``batched`` defaults to the first input's."""
        tensors = {k: torch.from_numpy(np.array(v, dtype=np.float64)) for k, v in (params or {}).items()}
        node = Node(name, op, tuple(i.name for i in inputs), (), tensors, dict(attrs or {}))
        zeros = [torch.zeros((1, *i.shape), dtype=torch.float64) for i in inputs]
        try:
            shape = tuple(FORWARD[op](node, zeros).shape[1:])
        except (RuntimeError, IndexError, ValueError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelError(f"{self.name}: node {n.name!r} ({n.op_type}) is inconsistent: {first}") from e
        self.nodes[name] = replace(node, shape=shape)
        self._taken.add(name)
        return Ref(name, shape, inputs[0].batched if batched is None else batched)

    def name_for(self, n: OnnxNode, last: bool) -> str:
        """The ONNX output name for the node that ends a conversion, a fresh one before."""
        return n.out if last else self.fresh(n.out)

    def reshape(self, n: OnnxNode, x: Ref, full: Sequence[int], last: bool = True) -> Ref:
        """``x`` as a value of ONNX shape ``full`` (same elements in row-major order), stored in
        the canonical form for ``full``."""
        full = tuple(int(d) for d in full)
        if math.prod(full) != x.size:
            raise ModelError(f"{self.name}: node {n.name!r} ({n.op_type}) reshapes {self.full_shape(x)} to {full}")
        batched = self.canonical(full)
        shape = full[1:] if batched else full
        if shape == x.shape and batched == x.batched:
            return x
        if shape == x.shape:
            return replace(x, batched=batched)
        return self.emit(n, self.name_for(n, last), Op.RESHAPE, [x], attrs={"shape": shape}, batched=batched)

    def affine(self, n: OnnxNode, x: Ref, scale: Any = 1.0, shift: Any = 0.0, last: bool = True) -> Ref:
        """``x * scale + shift`` with constants that broadcast to ``x``'s ONNX shape."""
        params = {"scale": self.per_sample(n, x, scale), "shift": self.per_sample(n, x, shift)}
        return self.emit(n, self.name_for(n, last), Op.AFFINE, [x], params)

    def per_sample(self, n: OnnxNode, x: Ref, c: Any) -> np.ndarray:
        """Constant ``c`` (ONNX broadcasting against ``x``) expanded to ``x``'s per-sample shape."""
        c = np.asarray(c, dtype=np.float64)
        full = self.full_shape(x)
        try:
            out = np.broadcast_shapes(c.shape, full)
        except ValueError:
            out = None
        if out != full:
            raise n.unsupported(f"constant of shape {c.shape} does not broadcast to {full}")
        return np.broadcast_to(c, full).reshape(x.shape).copy()

    def constant(self, n: OnnxNode, value: np.ndarray) -> Ref:
        """A constant ``value`` (an ONNX tensor) as a node of the graph, stored canonically."""
        value = np.asarray(value, dtype=np.float64)
        batched = self.canonical(value.shape)
        per_sample = value.reshape(value.shape[1:]) if batched else value
        source = Ref(self.input_name, self.nodes[self.input_name].shape)
        return self.emit(n, self.fresh(n.out), Op.CONSTANT, [source], {"value": per_sample}, batched=batched)

    def broadcast(self, n: OnnxNode, x: Ref, full: Sequence[int]) -> Ref:
        """``x`` broadcast (ONNX rules) to the ONNX shape ``full``, stored canonically."""
        full = tuple(int(d) for d in full)
        mine = self.full_shape(x)
        if mine == full:
            return x
        if len(mine) > len(full) or np.broadcast_shapes(mine, full) != full:
            raise n.unsupported(f"a value of shape {mine} does not broadcast to {full}")
        padded = (1,) * (len(full) - len(mine)) + mine
        batched = self.canonical(full)
        if batched:  # the batch axis has size 1 on both sides: expand the per-sample axes
            y = self.reshape(n, x, padded, last=False)
            return self.emit(n, self.fresh(n.out), Op.EXPAND, [y], attrs={"shape": full[1:]}, batched=True)
        y = self._unbatched(n, x, padded)
        return self.emit(n, self.fresh(n.out), Op.EXPAND, [y], attrs={"shape": full}, batched=False)

    def _unbatched(self, n: OnnxNode, x: Ref, full: tuple[int, ...]) -> Ref:
        """``x`` stored unbatched with per-sample shape ``full`` (its ONNX shape)."""
        if not x.batched and x.shape == full:
            return x
        return self.emit(n, self.fresh(n.out), Op.RESHAPE, [x], attrs={"shape": full}, batched=False)

    def unbatched(self, n: OnnxNode, x: Ref) -> Ref:
        """``x`` stored unbatched: per-sample shape = its ONNX shape (size-1 batch axis kept)."""
        return self._unbatched(n, x, self.full_shape(x))

    def same_form(self, n: OnnxNode, refs: Sequence[Ref], full: Sequence[int]) -> list[Ref]:
        """Every value in ``refs`` broadcast to the ONNX shape ``full`` and stored alike."""
        out = [self.broadcast(n, r, full) for r in refs]
        batched = self.canonical(full)
        return [r if r.batched == batched else (self.reshape(n, r, full, last=False)) for r in out]
