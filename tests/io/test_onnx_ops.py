"""Every op added for the VNN-COMP 2024 corpus, on a small ONNX graph built with onnx.helper:

* the IR evaluates like onnxruntime on random inputs;
* on random boxes (hypothesis), interval and CROWN bounds of every node, and CROWN's bound of
  every output, contain the values of points sampled in the box (float64 forward pass).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from certify.bounds import crown_bounds, crown_objective, ibp, input_bounds
from certify.io.onnx import load_onnx, load_onnx_model
from certify.network import Network, Op
from tests import zoo
from tests.io.test_onnx import relative_error

N = helper.make_node


def _w(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _dense(act: list[Any], n_in: int = 3, n_hidden: int = 4, opset: int = 13, out: str = "y",
           extra: dict[str, np.ndarray] | None = None, x_shape: tuple[int, ...] | None = None) -> Any:
    """x -> MatMul(W) + b -> ``act`` nodes (reading "h", writing ``out``)."""
    nodes = [N("MatMul", ["x", "W"], ["m"]), N("Add", ["m", "b"], ["h"]), *act]
    inits = {"W": _w(n_in, n_hidden), "b": _w(n_hidden, seed=1), **(extra or {})}
    return zoo.onnx_helper_model(nodes, {"x": x_shape or (1, n_in)}, out, inits, opset=opset)


#: Constants the image graphs may read (unused ones are dropped by :func:`_model`).
IMAGE_CONSTS: dict[str, np.ndarray] = {
    "p": np.array([0, 0, 1, 2, 0, 0, 0, 1]), "v": np.array(0.25, np.float32),
    "sc": np.array([1, 1, 2, 3], np.float32), "sc3": np.array([1, 1, 3, 2], np.float32), "ax": np.array([2, 3])}


def _conv_in(act: list[Any], opset: int = 13) -> Any:
    """x [1, 2, 5, 5] -> Conv 3x3 (pad 1) -> ``act`` (reading "h")."""
    nodes = [N("Conv", ["x", "K"], ["h"], pads=[1, 1, 1, 1]), *act]
    return zoo.onnx_helper_model(nodes, {"x": (1, 2, 5, 5)}, "y", {"K": _w(2, 2, 3, 3), **IMAGE_CONSTS}, opset=opset)


#: name -> (model builder, the IR op it must produce)
GRAPHS: dict[str, tuple[Callable[[], Any], Op]] = {
    "sign": (lambda: _dense([N("Sign", ["h"], ["y"])]), Op.SIGN),
    "sin": (lambda: _dense([N("Sin", ["h"], ["y"])]), Op.SIN),
    "cos": (lambda: _dense([N("Cos", ["h"], ["y"])]), Op.COS),
    "floor": (lambda: _dense([N("Floor", ["h"], ["y"])]), Op.FLOOR),
    "exp": (lambda: _dense([N("Exp", ["h"], ["y"])]), Op.EXP),
    "reciprocal_positive": (lambda: _dense([N("Relu", ["h"], ["r"]), N("Add", ["r", "half"], ["p"]),
                                            N("Reciprocal", ["p"], ["y"])], extra={"half": np.array(0.5, np.float32)}),
                            Op.RECIPROCAL),
    "div_by_value": (lambda: _dense([N("Sigmoid", ["h"], ["s"]), N("Add", ["s", "one"], ["p"]),
                                     N("Div", ["h", "p"], ["y"])], extra={"one": np.array(1.0, np.float32)}), Op.MUL),
    "div_constant_by_value": (lambda: _dense([N("Exp", ["h"], ["e"]), N("Div", ["two", "e"], ["y"])],
                                             extra={"two": np.array(2.0, np.float32)}), Op.RECIPROCAL),
    "leaky_relu": (lambda: _dense([N("LeakyRelu", ["h"], ["y"], alpha=0.1)]), Op.LEAKY_RELU),
    "leaky_relu_steep": (lambda: _dense([N("LeakyRelu", ["h"], ["y"], alpha=2.5)]), Op.LEAKY_RELU),
    "pow2": (lambda: _dense([N("Pow", ["h", "e"], ["y"])], extra={"e": np.array(2.0, np.float32)}), Op.POW),
    "pow3": (lambda: _dense([N("Pow", ["h", "e"], ["y"])], extra={"e": np.array(3.0, np.float32)}), Op.POW),
    "pow_minus2": (lambda: _dense([N("Sigmoid", ["h"], ["s"]), N("Pow", ["s", "e"], ["y"])],
                                  extra={"e": np.array(-2.0, np.float32)}), Op.POW),
    "abs": (lambda: _dense([N("Abs", ["h"], ["y"])]), Op.RELU),
    "max_min_of_values": (lambda: _dense([N("Relu", ["h"], ["r"]), N("Neg", ["h"], ["n"]),
                                          N("Max", ["r", "n", "h"], ["a"]), N("Min", ["a", "c"], ["y"])],
                                         extra={"c": np.array([0.3, -0.2, 1.0, 0.0], np.float32)}), Op.RELU),
    "clip": (lambda: _dense([N("Clip", ["h", "lo", "hi"], ["y"])],
                            extra={"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}), Op.RELU),
    "clip_opset9": (lambda: _dense([N("Clip", ["h"], ["y"], min=-0.2, max=0.4)], opset=9), Op.RELU),
    "sum": (lambda: _dense([N("Relu", ["h"], ["r"]), N("Sum", ["h", "r", "c"], ["y"])],
                           extra={"c": np.array([1.0, 2.0, 3.0, 4.0], np.float32)}), Op.ADD),
    "softmax": (lambda: _dense([N("Softmax", ["h"], ["y"], axis=-1)]), Op.SOFTMAX),
    "softmax_opset11_coerced": (lambda: _dense([N("Reshape", ["h", "s"], ["r"]), N("Softmax", ["r"], ["y"], axis=1)],
                                               opset=11, extra={"s": np.array([1, 2, 2])}), Op.SOFTMAX),
    "mul_of_values_broadcast": (lambda: _dense([N("Reshape", ["h", "s1"], ["a"]), N("Sigmoid", ["h"], ["t"]),
                                                N("Reshape", ["t", "s2"], ["q"]), N("Mul", ["a", "q"], ["y"])],
                                               extra={"s1": np.array([1, 4, 1]), "s2": np.array([1, 1, 4])}), Op.MUL),
    "matmul_of_values": (lambda: _dense([N("Reshape", ["h", "s"], ["a"]), N("Transpose", ["a"], ["t"], perm=[0, 2, 1]),
                                         N("MatMul", ["a", "t"], ["y"])], n_hidden=6,
                                        extra={"s": np.array([1, 2, 3])}), Op.MATMUL),
    "matmul_of_rows": (lambda: _dense([N("Tanh", ["h"], ["t"]), N("Transpose", ["t"], ["c"], perm=[1, 0]),
                                       N("MatMul", ["c", "h"], ["y"])]), Op.MATMUL),
    "gather_scalar_and_matrix": (lambda: _dense([N("Gather", ["h", "i"], ["a"], axis=1), N("Gather", ["h", "j"], ["q"], axis=1),
                                                 N("Unsqueeze", ["a", "ax"], ["a2"]), N("Reshape", ["q", "s"], ["b2"]),
                                                 N("Concat", ["a2", "b2"], ["y"], axis=1)],
                                                extra={"i": np.array(2), "j": np.array([[3, 0], [1, -1]]),
                                                       "ax": np.array([1]), "s": np.array([1, 4])}), Op.GATHER),
    "slice_with_steps": (lambda: _dense([N("Slice", ["h", "a", "e", "ax", "st"], ["y"])], n_hidden=7,
                                        extra={"a": np.array([-1]), "e": np.array([-100]), "ax": np.array([1]),
                                               "st": np.array([-2])}), Op.GATHER),
    "split": (lambda: zoo.onnx_helper_model(
        [N("MatMul", ["x", "W"], ["h"]), N("Split", ["h", "sp"], ["a", "q"], axis=1), N("Relu", ["a"], ["ra"]),
         N("Sub", ["q", "ra"], ["y"])], {"x": (1, 3)}, "y", {"W": _w(3, 6), "sp": np.array([3, 3])}), Op.SLICE),
    "split_opset11": (lambda: zoo.onnx_helper_model(
        [N("MatMul", ["x", "W"], ["h"]), N("Split", ["h"], ["a", "q"], axis=1, split=[2, 4]), N("Relu", ["q"], ["r"]),
         N("Concat", ["r", "a"], ["y"], axis=1)], {"x": (1, 3)}, "y", {"W": _w(3, 6)}, opset=11), Op.SLICE),
    "pad_constant": (lambda: _conv_in([N("Pad", ["h", "p", "v"], ["y"])]), Op.PAD),
    "pad_opset9": (lambda: _conv_in([N("Relu", ["h"], ["r"]), N("Pad", ["r"], ["y"], pads=[0, 0, 1, 0, 0, 1, 2, 1],
                                                                     value=-0.5)], opset=9), Op.PAD),
    "conv_transpose": (lambda: zoo.onnx_helper_model(
        [N("ConvTranspose", ["x", "K", "B"], ["h"], strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 0]),
         N("Relu", ["h"], ["y"])], {"x": (1, 2, 4, 3)}, "y", {"K": _w(2, 3, 3, 3), "B": _w(3, seed=1)}),
                       Op.CONV_TRANSPOSE),
    "conv_transpose_groups": (lambda: zoo.onnx_helper_model(
        [N("ConvTranspose", ["x", "K"], ["y"], group=2, dilations=[2, 1])], {"x": (1, 4, 3, 3)}, "y",
        {"K": _w(4, 1, 2, 3)}), Op.CONV_TRANSPOSE),
    "upsample_opset9": (lambda: _conv_in([N("Upsample", ["h", "sc"], ["y"], mode="nearest")], opset=9),
                        Op.UPSAMPLE),
    "resize_nearest": (lambda: _conv_in([N("Resize", ["h", "", "sc"], ["y"], mode="nearest",
                                           coordinate_transformation_mode="asymmetric", nearest_mode="floor")]),
                       Op.UPSAMPLE),
    "resize_half_pixel": (lambda: _conv_in([N("Resize", ["h", "", "sc3"], ["y"], mode="nearest")]), Op.UPSAMPLE),
    "reduce_sum_keepdims": (lambda: _conv_in([N("ReduceSum", ["h", "ax"], ["y"], keepdims=1)]), Op.REDUCE_SUM),
    "reduce_mean_drop": (lambda: _conv_in([N("ReduceMean", ["h"], ["y"], axes=[1, 3], keepdims=0)], opset=11),
                         Op.REDUCE_SUM),
    "expand": (lambda: _dense([N("Reshape", ["h", "s"], ["r"]), N("Expand", ["r", "e"], ["y"])],
                              extra={"s": np.array([1, 4, 1]), "e": np.array([2, 1, 1, 3])}), Op.EXPAND),
    "concat_constant_token": (lambda: _dense([N("Reshape", ["h", "s"], ["r"]), N("Concat", ["tok", "r"], ["y"], axis=1)],
                                             extra={"s": np.array([1, 2, 2]), "tok": _w(1, 1, 2, seed=5)}),
                              Op.CONSTANT),
    "mul_constant_larger": (lambda: _dense([N("ReduceSum", ["h", "ax1"], ["s"], keepdims=1), N("Mul", ["s", "c"], ["y"])],
                                           extra={"ax1": np.array([1]), "c": _w(4, seed=3)}), Op.EXPAND),
    "sub_constant_column": (lambda: _dense([N("Reshape", ["h", "s"], ["r"]), N("Sub", ["r", "c"], ["y"])],
                                           extra={"s": np.array([1, 4, 1]), "c": _w(5, seed=3)}), Op.EXPAND),
    "row_to_column_and_back": (lambda: _dense([N("Transpose", ["h"], ["t"], perm=[1, 0]), N("MatMul", ["A", "t"], ["m2"]),
                                               N("Transpose", ["m2"], ["y"], perm=[1, 0])],
                                              extra={"A": _w(5, 4, seed=4)}), Op.LINEAR),
    "unsqueeze_folded_opset9": (lambda: zoo.onnx_helper_model(
        [N("Shape", ["x"], ["sh"]), N("Gather", ["sh", "z"], ["b"], axis=0), N("Unsqueeze", ["b"], ["b1"], axes=[0]),
         N("Concat", ["b1", "m1"], ["t"], axis=0), N("Reshape", ["x", "t"], ["f"]), N("Relu", ["f"], ["y"])],
        {"x": (1, 2, 3)}, "y", {"z": np.array(0), "m1": np.array([-1])}, opset=9), Op.RESHAPE),
}


def _model(name: str) -> Any:
    model = GRAPHS[name][0]()
    used = {i for node in model.graph.node for i in node.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return model


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_new_op_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    path = zoo.save(_model(name), tmp_path / f"{name}.onnx")
    net = load_onnx(path)
    assert GRAPHS[name][1] in net.ops(), sorted(op.value for op in net.ops())
    err = relative_error(path, net, n=64, low=-2.0, high=2.0)
    assert err <= 1e-5, f"{name}: relative difference {err:.3g}"


def _check_bounds(net: Network, seed: int, width: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    shape = net.input_shape
    centre = 2 * torch.rand(shape, generator=gen, dtype=torch.float64) - 1
    half = width * torch.rand(shape, generator=gen, dtype=torch.float64)
    lo, hi = centre - half, centre + half
    net64 = net.to(dtype=torch.float64)
    box = input_bounds(lo.numpy()[None], hi.numpy()[None])
    xs = lo + (hi - lo) * torch.rand(400, *shape, generator=gen, dtype=torch.float64)
    xs = torch.cat([xs, lo[None], hi[None]])
    with torch.no_grad():
        values = net64.forward_all(xs)
        for bounds in (ibp(net64, box), crown_bounds(net64, box)):
            for node in net64.nodes:
                v, b = values[node.name], bounds[node.name]
                tol = 1e-9 * (1 + v.abs().max())
                assert torch.all(v >= b.lower - tol), f"{node.name} ({node.op.value}) below its lower bound"
                assert torch.all(v <= b.upper + tol), f"{node.name} ({node.op.value}) above its upper bound"
        bounds = crown_bounds(net64, box)
        n_out = net64.output_size
        c = torch.cat([torch.eye(n_out), -torch.eye(n_out)]).to(torch.float64).unsqueeze(0)
        lower = crown_objective(net64, bounds, c).lower[0]
        y = values[net64.output].reshape(xs.shape[0], -1)
        tol = 1e-9 * (1 + y.abs().max())
        assert torch.all(y >= lower[:n_out] - tol), "CROWN's output lower bound is violated"
        assert torch.all(-y >= lower[n_out:] - tol), "CROWN's output upper bound is violated"


@pytest.mark.parametrize("name", sorted(GRAPHS))
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), width=st.sampled_from([0.0, 1e-3, 0.1, 0.5, 2.0]))
def test_new_op_bounds_contain_sampled_values(name: str, seed: int, width: float) -> None:
    _check_bounds(load_onnx_model(_model(name), name), seed, width)


def test_every_new_ir_op_is_exercised() -> None:
    made = {GRAPHS[name][1] for name in GRAPHS}
    new = {Op.SIGN, Op.SIN, Op.COS, Op.FLOOR, Op.EXP, Op.RECIPROCAL, Op.LEAKY_RELU, Op.POW, Op.SOFTMAX, Op.MUL,
           Op.MATMUL, Op.CONV_TRANSPOSE, Op.UPSAMPLE, Op.PAD, Op.GATHER, Op.REDUCE_SUM, Op.EXPAND, Op.CONSTANT}
    assert new <= made | {Op.SLICE}, sorted(op.value for op in new - made)
