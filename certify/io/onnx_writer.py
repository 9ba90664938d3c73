"""Network -> ONNX, through ``onnx.helper``: one writer per op in :data:`WRITERS`.

Used by ``certify spec export`` to write the augmented network of a lowering (a prepended
blur layer, a monotonicity product net) so that other verifiers can check the exported
VNN-LIB.  The graph input is ``[1, *input_shape]`` float32 and the output
``[1, *output_shape]``; every IR op works on a tensor with a leading batch axis.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from certify.errors import UnsupportedOp
from certify.network import Network, Node, Op

if TYPE_CHECKING:
    import onnx

__all__ = ["WRITERS", "network_to_onnx", "save_onnx"]

#: The opset the writer targets (Slice/Reshape take tensors, Pad not needed).
OPSET = 17


class _Builder:
    """Collects ONNX nodes and initializers; hands out unique names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._count = 0

    def const(self, base: str, value: np.ndarray, dtype: Any = np.float32) -> str:
        from onnx import numpy_helper

        self._count += 1
        name = f"{base}__c{self._count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def add(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output


def _np(node: Node, key: str) -> np.ndarray:
    return node.params[key].detach().to("cpu").double().numpy()


def _linear(b: _Builder, node: Node, xs: list[str]) -> str:
    w = b.const(node.name + "_W", _np(node, "weight"))
    if "bias" not in node.params:
        return b.add("MatMul", [xs[0], w], node.name)
    mm = b.add("MatMul", [xs[0], w], node.name + "_mm")
    return b.add("Add", [mm, b.const(node.name + "_b", _np(node, "bias"))], node.name)


def _conv(b: _Builder, node: Node, xs: list[str]) -> str:
    a = node.attrs
    inputs = [xs[0], b.const(node.name + "_W", _np(node, "weight"))]
    if "bias" in node.params:
        inputs.append(b.const(node.name + "_b", _np(node, "bias")))
    kernel = list(node.params["weight"].shape[2:])
    return b.add("Conv", inputs, node.name, kernel_shape=kernel, strides=list(a["stride"]),
                 pads=list(a["padding"]), dilations=list(a["dilation"]), group=int(a["groups"]))


def _affine(b: _Builder, node: Node, xs: list[str]) -> str:
    mul = b.add("Mul", [xs[0], b.const(node.name + "_s", _np(node, "scale"))], node.name + "_mul")
    return b.add("Add", [mul, b.const(node.name + "_t", _np(node, "shift"))], node.name)


def _simple(op_type: str) -> Callable[[_Builder, Node, list[str]], str]:
    return lambda b, node, xs: b.add(op_type, list(xs), node.name)


def _pool(op_type: str) -> Callable[[_Builder, Node, list[str]], str]:
    def write(b: _Builder, node: Node, xs: list[str]) -> str:
        a = node.attrs
        extra = {"count_include_pad": int(bool(a["count_include_pad"]))} if op_type == "AveragePool" else {}
        return b.add(op_type, [xs[0]], node.name, kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                     pads=list(a["padding"]), **extra)
    return write


def _reshape(b: _Builder, node: Node, xs: list[str]) -> str:
    shape = b.const(node.name + "_shape", np.array([-1, *node.attrs["shape"]]), np.int64)
    return b.add("Reshape", [xs[0], shape], node.name)


def _transpose(b: _Builder, node: Node, xs: list[str]) -> str:
    return b.add("Transpose", [xs[0]], node.name, perm=[0, *(p + 1 for p in node.attrs["perm"])])


def _concat(b: _Builder, node: Node, xs: list[str]) -> str:
    return b.add("Concat", list(xs), node.name, axis=int(node.attrs["axis"]) + 1)


def _slice(b: _Builder, node: Node, xs: list[str]) -> str:
    a = node.attrs
    starts = b.const(node.name + "_st", np.array([a["start"]]), np.int64)
    ends = b.const(node.name + "_en", np.array([a["stop"]]), np.int64)
    axes = b.const(node.name + "_ax", np.array([a["axis"] + 1]), np.int64)
    return b.add("Slice", [xs[0], starts, ends, axes], node.name)


#: How each IR op is written as ONNX nodes (a missing op raises UnsupportedOp).
WRITERS: dict[Op, Callable[[_Builder, Node, list[str]], str]] = {
    Op.LINEAR: _linear,
    Op.CONV: _conv,
    Op.AFFINE: _affine,
    Op.ADD: _simple("Add"),
    Op.SUB: _simple("Sub"),
    Op.RELU: _simple("Relu"),
    Op.SIGMOID: _simple("Sigmoid"),
    Op.TANH: _simple("Tanh"),
    Op.MAXPOOL: _pool("MaxPool"),
    Op.AVGPOOL: _pool("AveragePool"),
    Op.RESHAPE: _reshape,
    Op.TRANSPOSE: _transpose,
    Op.CONCAT: _concat,
    Op.SLICE: _slice,
}


def network_to_onnx(network: Network, input_name: str = "input", output_name: str = "output") -> onnx.ModelProto:
    """The ONNX model of ``network`` (batch axis 1 in front of every per-sample shape)."""
    import onnx
    from onnx import TensorProto, helper

    b = _Builder()
    names = {network.input.name: input_name}
    for node in network.nodes[1:]:
        writer = WRITERS.get(node.op)
        if writer is None:
            raise UnsupportedOp(node.op.value, node.name, "no ONNX writer for this op")
        names[node.name] = writer(b, node, [names[i] for i in node.inputs])
    b.add("Identity", [names[network.output]], output_name)
    graph = helper.make_graph(
        b.nodes, network.name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, *network.input_shape])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [1, *network.output_shape])],
        b.inits,
    )
    model = helper.make_model(graph, producer_name="certify", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    return model


def save_onnx(network: Network, path: str | os.PathLike[str]) -> Path:
    """Write ``network`` as an ONNX file at ``path``; returns the path."""
    import onnx

    path = Path(path)
    onnx.save(network_to_onnx(network), os.fspath(path))
    return path
