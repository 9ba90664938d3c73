"""certify.io.onnx: every supported model evaluates like onnxruntime; bad input fails clearly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from certify.errors import ModelError, UnsupportedOp
from certify.io.onnx import load_onnx, load_onnx_model
from certify.network import Network, Op
from certify.replay import OnnxOracle
from tests import zoo

BENCHMARKS = Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks" / "vnncomp2021"
FAMILIES = ("acasxu", "mnistfc", "test")
BENCHMARK_FILES = sorted(p for f in FAMILIES for p in (BENCHMARKS / f).glob("*.onnx")) if BENCHMARKS.is_dir() else []
#: Input ranges where [-1, 1] is not sensible (MNIST pixels lie in [0, 1]).
INPUT_RANGES = {"mnistfc": (0.0, 1.0)}
N = helper.make_node


# ---------------------------------------------------------------------------------------
# The oracle: onnxruntime, one sample at a time
# ---------------------------------------------------------------------------------------

def run_ort(path: Path, x: np.ndarray) -> np.ndarray:
    """onnxruntime outputs for each sample of ``x: [B, *input_shape]``, stacked (flat)."""
    oracle = OnnxOracle(path)
    return np.stack([oracle.run(sample) for sample in x])


def relative_error(path: Path, net: Network, n: int = 100, seed: int = 0, low: float = -1.0,
                   high: float = 1.0) -> float:
    """max |IR - onnxruntime| / max(1, max |onnxruntime|) over ``n`` uniform random inputs."""
    gen = torch.Generator().manual_seed(seed)
    x = low + (high - low) * torch.rand((n, *net.input_shape), generator=gen)
    with torch.no_grad():
        ours = net.forward(x).reshape(n, -1).double().numpy()
    ref = run_ort(path, x.numpy()).astype(np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max() / max(1.0, np.abs(ref).max()))


def assert_matches(path: Path, net: Network | None = None, **kwargs: Any) -> Network:
    net = load_onnx(path) if net is None else net
    err = relative_error(path, net, **kwargs)
    assert err <= 1e-5, f"{path.name}: relative difference {err:.3g}"
    return net


# ---------------------------------------------------------------------------------------
# VNN-COMP 2021 benchmarks
# ---------------------------------------------------------------------------------------

def test_benchmark_files_are_present() -> None:
    """The shared benchmarks must be beside the project (a missing folder fails, never skips)."""
    families = {p.parent.name for p in BENCHMARK_FILES}
    assert families == {"acasxu", "mnistfc", "test"}, BENCHMARKS
    assert len([p for p in BENCHMARK_FILES if p.parent.name == "acasxu"]) == 45


@pytest.mark.parametrize("path", BENCHMARK_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_benchmark_matches_onnxruntime(path: Path) -> None:
    low, high = INPUT_RANGES.get(path.parent.name, (-1.0, 1.0))
    net = assert_matches(path, low=low, high=high)
    assert net.is_piecewise_linear
    assert net.ops() <= {Op.INPUT, Op.RESHAPE, Op.LINEAR, Op.RELU, Op.AFFINE}


def test_benchmark_shapes_follow_the_batch_convention() -> None:
    acas = load_onnx(BENCHMARKS / "acasxu" / "ACASXU_run2a_1_1_batch_2000.onnx")
    assert (acas.input_shape, acas.output_shape) == ((1, 1, 5), (5,))
    assert acas.output == "linear_7_Add"
    assert [n.op for n in acas.nodes].count(Op.LINEAR) == 7  # MatMul + Add folded
    mnist = load_onnx(BENCHMARKS / "mnistfc" / "mnist-net_256x2.onnx")
    assert (mnist.input_shape, mnist.output_shape) == ((784, 1), (10,))
    nano = load_onnx(BENCHMARKS / "test" / "test_nano.onnx")  # rank-1 input: no batch axis
    assert (nano.input_shape, nano.output_shape) == ((1,), (1,))


# ---------------------------------------------------------------------------------------
# Models exported from torch
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_dense_zoo_models(activation: str, tmp_path: Path) -> None:
    path, net = zoo.to_network(zoo.dense(1, [5, 8, 8, 3], activation), (5,), tmp_path)
    assert_matches(path, net, low=-3.0, high=3.0)
    assert net.ops() == {Op.INPUT, Op.LINEAR, Op[activation.upper()]}
    assert net.output_shape == (3,)


@pytest.mark.parametrize("pool", ["max", "avg", "none"])
@pytest.mark.parametrize("batchnorm", [True, False])
def test_conv_zoo_models(pool: str, batchnorm: bool, tmp_path: Path) -> None:
    module = zoo.conv(2, (2, 9, 8), channels=(3, 4, 2), n_out=4, batchnorm=batchnorm, pool=pool)
    path, net = zoo.to_network(module, (2, 9, 8), tmp_path)
    assert_matches(path, net)
    assert Op.AFFINE not in net.ops()  # BatchNorm folded into the convolutions
    assert net.input_shape == (2, 9, 8) and net.output_shape == (4,)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_conv_zoo_smooth_activations(activation: str, tmp_path: Path) -> None:
    path, net = zoo.to_network(zoo.conv(3, activation=activation, pool="avg"), (1, 8, 8), tmp_path)
    assert_matches(path, net)


class _View(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x.view(x.size(0), -1)).reshape(x.size(0), 2, -1).transpose(1, 2)


def test_exporter_shape_subgraphs_are_folded(tmp_path: Path) -> None:
    path, net = zoo.to_network(_View(), (3, 4), tmp_path, constant_folding=False)
    assert_matches(path, net)
    assert net.ops() == {Op.INPUT, Op.RESHAPE, Op.RELU, Op.TRANSPOSE}
    assert net.output_shape == (6, 2)


# ---------------------------------------------------------------------------------------
# Graphs built with onnx.helper, one per op variant
# ---------------------------------------------------------------------------------------

def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _w(*shape: int, seed: int = 0) -> np.ndarray:
    return _rng(seed).normal(size=shape).astype(np.float32)


def _conv_model(attrs: dict[str, Any], w_shape: tuple[int, ...] = (3, 2, 3, 3),
                x_shape: tuple[int, ...] = (1, 2, 7, 6)) -> Any:
    return zoo.onnx_helper_model(
        [N("Conv", ["x", "w", "b"], ["c"], **attrs), N("Relu", ["c"], ["y"])],
        {"x": x_shape}, "y", {"w": _w(*w_shape), "b": _w(w_shape[0], seed=1)})


def _pool_model(op: str, **attrs: Any) -> Any:
    return zoo.onnx_helper_model([N(op, ["x"], ["y"], **attrs)], {"x": (1, 2, 7, 6)}, "y")


def _bn_inputs(c: int) -> dict[str, np.ndarray]:
    r = _rng(3)
    return {"s": 1 + 0.3 * r.normal(size=c), "bb": r.normal(size=c), "m": r.normal(size=c),
            "v": 0.5 + r.random(size=c)}


HELPER_GRAPHS: dict[str, Callable[[], Any]] = {
    "gemm_alpha_beta_transB": lambda: zoo.onnx_helper_model(
        [N("Gemm", ["x", "B", "C"], ["g"], alpha=0.5, beta=2.0, transB=1), N("Relu", ["g"], ["y"])],
        {"x": (1, 4)}, "y", {"B": _w(3, 4), "C": _w(1, 3, seed=1)}),
    "gemm_plain_symbolic_batch": lambda: zoo.onnx_helper_model(
        [N("Gemm", ["x", "B"], ["y"])], {"x": ("N", 4)}, "y", {"B": _w(4, 3)}),
    "matmul_no_batch": lambda: zoo.onnx_helper_model(
        [N("MatMul", ["x", "W"], ["m"]), N("Tanh", ["m"], ["y"])], {"x": (3,)}, "y", {"W": _w(3, 2)}),
    "matmul_const_left_1d": lambda: zoo.onnx_helper_model(
        [N("MatMul", ["W", "x"], ["y"])], {"x": (3,)}, "y", {"W": _w(2, 3)}),
    "matmul_const_left_batched": lambda: zoo.onnx_helper_model(
        [N("MatMul", ["W", "x"], ["m"]), N("Sigmoid", ["m"], ["y"])], {"x": (1, 3, 4)}, "y", {"W": _w(5, 3)}),
    "matmul_rank3_and_vector": lambda: zoo.onnx_helper_model(
        [N("MatMul", ["x", "W"], ["m"]), N("MatMul", ["m", "v"], ["y"])], {"x": (1, 2, 3)}, "y",
        {"W": _w(1, 3, 4), "v": _w(4, seed=1)}),
    "add_sub_of_nodes": lambda: zoo.onnx_helper_model(
        [N("Relu", ["x"], ["r"]), N("Sigmoid", ["x"], ["s"]), N("Add", ["r", "s"], ["a"]),
         N("Sub", ["a", "x"], ["y"])], {"x": (1, 6)}, "y"),
    "affine_chain": lambda: zoo.onnx_helper_model(
        [N("Sub", ["x", "c1"], ["a1"]), N("Div", ["a1", "two"], ["a2"]), N("Mul", ["c2", "a2"], ["a3"]),
         N("Add", ["c3", "a3"], ["a4"]), N("Neg", ["a4"], ["a5"]), N("Sub", ["four", "a5"], ["a6"]),
         N("Relu", ["a6"], ["y"])],
        {"x": (1, 2, 3)}, "y",
        {"c1": _w(1, 2, 3), "two": np.array(2.5), "c2": _w(3, seed=1), "c3": _w(2, 1, seed=2),
         "four": np.array(4.0)}),
    "matmul_add_relu_folds": lambda: zoo.onnx_helper_model(
        [N("MatMul", ["x", "W"], ["m"]), N("Add", ["m", "b"], ["a"]), N("Mul", ["a", "k"], ["s"]),
         N("Relu", ["s"], ["y"])], {"x": (1, 5)}, "y", {"W": _w(5, 4), "b": _w(4, seed=1), "k": _w(1, 4, seed=2)}),
    "conv_pads_strides": lambda: _conv_model({"pads": [0, 1, 2, 1], "strides": [2, 1]}),
    "conv_dilation_groups": lambda: _conv_model(
        {"pads": [1, 1, 1, 1], "dilations": [2, 1], "group": 2}, w_shape=(4, 1, 3, 2)),
    "conv_same_upper": lambda: _conv_model({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, w_shape=(3, 2, 2, 3)),
    "conv_same_lower": lambda: _conv_model({"auto_pad": "SAME_LOWER", "strides": [2, 2]}, w_shape=(3, 2, 2, 3)),
    "conv_valid_no_bias": lambda: zoo.onnx_helper_model(
        [N("Conv", ["x", "w"], ["y"], auto_pad="VALID", kernel_shape=[3, 3])], {"x": (1, 2, 7, 6)}, "y",
        {"w": _w(3, 2, 3, 3)}),
    "batchnorm_after_relu": lambda: zoo.onnx_helper_model(
        [N("Relu", ["x"], ["r"]), N("BatchNormalization", ["r", "s", "bb", "m", "v"], ["y"], epsilon=1e-3)],
        {"x": (1, 3, 4, 4)}, "y", _bn_inputs(3)),
    "batchnorm_folds_into_conv": lambda: zoo.onnx_helper_model(
        [N("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         N("BatchNormalization", ["c", "s", "bb", "m", "v"], ["y"])],
        {"x": (1, 2, 5, 5)}, "y", {"w": _w(3, 2, 3, 3), **_bn_inputs(3)}),
    "batchnorm_after_shared_conv": lambda: zoo.onnx_helper_model(
        [N("Conv", ["x", "w"], ["c"]), N("BatchNormalization", ["c", "s", "bb", "m", "v"], ["n"]),
         N("Relu", ["c"], ["r"]), N("Add", ["n", "r"], ["y"])],
        {"x": (1, 2, 5, 5)}, "y", {"w": _w(3, 2, 3, 3), **_bn_inputs(3)}),
    "batchnorm_1d_after_gemm": lambda: zoo.onnx_helper_model(
        [N("Gemm", ["x", "B"], ["g"]), N("BatchNormalization", ["g", "s", "bb", "m", "v"], ["y"])],
        {"x": (1, 4)}, "y", {"B": _w(4, 3), **_bn_inputs(3)}),
    "maxpool_pads": lambda: _pool_model("MaxPool", kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 0, 1]),
    "maxpool_ceil_mode_no_effect": lambda: _pool_model("MaxPool", kernel_shape=[3, 2], strides=[2, 2], ceil_mode=1),
    "avgpool_exclude_pad": lambda: _pool_model("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "avgpool_include_pad": lambda: _pool_model(
        "AveragePool", kernel_shape=[3, 3], strides=[1, 2], pads=[1, 0, 1, 1], count_include_pad=1),
    "global_average_pool": lambda: _pool_model("GlobalAveragePool"),
    "global_max_pool": lambda: _pool_model("GlobalMaxPool"),
    "flatten_axes": lambda: zoo.onnx_helper_model(
        [N("Flatten", ["x"], ["f0"], axis=0), N("Relu", ["f0"], ["r"]), N("Reshape", ["r", "s"], ["q"]),
         N("Flatten", ["q"], ["y"], axis=-3)], {"x": (1, 2, 3, 4)}, "y", {"s": np.array([1, 2, 3, 4])}),
    "reshape_zero_minus_one": lambda: zoo.onnx_helper_model(
        [N("Reshape", ["x", "s1"], ["a"]), N("Sigmoid", ["a"], ["b"]), N("Reshape", ["b", "s2"], ["y"])],
        {"x": (1, 2, 3, 4)}, "y", {"s1": np.array([0, -1, 4]), "s2": np.array([0, 24])}),
    "transpose_of_node": lambda: zoo.onnx_helper_model(
        [N("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), N("Relu", ["t"], ["y"])], {"x": (1, 2, 3, 4)}, "y"),
    "transpose_of_constant": lambda: zoo.onnx_helper_model(
        [N("Transpose", ["W"], ["Wt"]), N("MatMul", ["x", "Wt"], ["y"])], {"x": (1, 3)}, "y", {"W": _w(2, 3)}),
    "concat": lambda: zoo.onnx_helper_model(
        [N("Relu", ["x"], ["r"]), N("Neg", ["x"], ["n"]), N("Concat", ["r", "n"], ["c"], axis=1),
         N("Concat", ["c", "c"], ["y"], axis=-1)], {"x": (1, 2, 3)}, "y"),
    "constant_identity_dropout": lambda: zoo.onnx_helper_model(
        [N("Constant", [], ["k"], value=helper.make_tensor("kv", TensorProto.FLOAT, [3], [1.0, -2.0, 0.5])),
         N("Identity", ["x"], ["i"]), N("Add", ["i", "k"], ["a"]), N("Dropout", ["a"], ["d"]),
         N("Relu", ["d"], ["r"]), N("Identity", ["r"], ["y"])], {"x": (1, 3)}, "y"),
    "squeeze_unsqueeze_opset13": lambda: zoo.onnx_helper_model(
        [N("Squeeze", ["x", "ax"], ["s"]), N("Relu", ["s"], ["r"]), N("Unsqueeze", ["r", "ax2"], ["y"])],
        {"x": (1, 3, 1, 4)}, "y", {"ax": np.array([2]), "ax2": np.array([-1, 1])}),
    "squeeze_unsqueeze_opset11": lambda: zoo.onnx_helper_model(
        [N("Squeeze", ["x"], ["s"], axes=[2]), N("Unsqueeze", ["s"], ["u"], axes=[3]),
         N("Tanh", ["u"], ["y"])], {"x": (1, 3, 1, 4)}, "y", opset=11),
    "slice": lambda: zoo.onnx_helper_model(
        [N("Slice", ["x", "st", "en", "ax"], ["s"]), N("Relu", ["s"], ["y"])], {"x": (1, 4, 6)}, "y",
        {"st": np.array([0, 1, -4]), "en": np.array([1, 3, 100]), "ax": np.array([0, 1, 2])}),
    "slice_opset9": lambda: zoo.onnx_helper_model(
        [N("Slice", ["x"], ["y"], starts=[2], ends=[-1], axes=[-1])], {"x": (1, 4, 6)}, "y", opset=9),
    "nodes_out_of_order": lambda: zoo.onnx_helper_model(
        [N("Relu", ["a"], ["y"]), N("Add", ["m", "b"], ["a"]), N("MatMul", ["x", "W"], ["m"])],
        {"x": (1, 3)}, "y", {"W": _w(3, 2), "b": _w(2, seed=1)}),
    "shape_gather_concat_reshape": lambda: zoo.onnx_helper_model(
        [N("Shape", ["x"], ["sh"]), N("Gather", ["sh", "zero"], ["b"], axis=0),
         N("Unsqueeze", ["b", "ax0"], ["b1"]), N("Concat", ["b1", "m1"], ["target"], axis=0),
         N("Cast", ["target"], ["target64"], to=TensorProto.INT64), N("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
         N("Reshape", ["xf", "target64"], ["y"])],
        {"x": (1, 2, 3)}, "y", {"zero": np.array(0), "ax0": np.array([0]), "m1": np.array([-1])}),
}


@pytest.mark.parametrize("case", sorted(HELPER_GRAPHS))
def test_helper_graph_matches_onnxruntime(case: str, tmp_path: Path) -> None:
    path = zoo.save(HELPER_GRAPHS[case](), tmp_path / f"{case}.onnx")
    assert_matches(path, low=-2.0, high=2.0)


def _load(case: str) -> Network:
    return load_onnx_model(HELPER_GRAPHS[case](), case)


def test_simplification_folds_and_merges() -> None:
    assert _load("gemm_alpha_beta_transB").ops() == {Op.INPUT, Op.LINEAR, Op.RELU}
    assert _load("matmul_add_relu_folds").ops() == {Op.INPUT, Op.LINEAR, Op.RELU}
    assert _load("batchnorm_folds_into_conv").ops() == {Op.INPUT, Op.CONV}
    assert _load("batchnorm_1d_after_gemm").ops() == {Op.INPUT, Op.LINEAR}
    assert [n.op for n in _load("affine_chain").nodes] == [Op.INPUT, Op.AFFINE, Op.RELU]
    assert Op.AFFINE in _load("batchnorm_after_shared_conv").ops()  # conv has another user
    assert _load("shape_gather_concat_reshape").ops() == {Op.INPUT, Op.RESHAPE}
    assert _load("constant_identity_dropout").ops() == {Op.INPUT, Op.AFFINE, Op.RELU}


def test_ir_attributes_are_per_sample() -> None:
    net = _load("concat")
    assert net.input_shape == (2, 3) and net.output_shape == (4, 6)
    assert [n.attrs["axis"] for n in net.nodes if n.op is Op.CONCAT] == [0, 1]
    slices = [(n.attrs["axis"], n.attrs["start"], n.attrs["stop"]) for n in _load("slice").nodes if n.op is Op.SLICE]
    assert slices == [(0, 1, 3), (1, 2, 6)]
    assert _load("transpose_of_node").node("t").attrs["perm"] == (1, 2, 0)
    conv = _load("conv_same_lower").nodes[1]
    assert conv.attrs["padding"] == (1, 1, 0, 0) and conv.attrs["stride"] == (2, 2)
    assert _load("conv_same_upper").nodes[1].attrs["padding"] == (0, 0, 1, 1)
    gap = _load("global_average_pool")
    assert gap.output_shape == (2, 1, 1)
    assert _load("gemm_plain_symbolic_batch").input_shape == (4,)
    assert _load("matmul_no_batch").input_shape == (3,)


def test_parameters_are_float32_and_names_come_from_onnx() -> None:
    net = _load("constant_identity_dropout")
    assert net.output == "y"
    assert all(p.dtype == torch.float32 for n in net.nodes for p in n.params.values())
    lin = _load("gemm_alpha_beta_transB").nodes[1]
    assert lin.params["weight"].shape == (4, 3) and lin.params["bias"].shape == (3,)
    assert lin.name == "g"


# ---------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------

UNSUPPORTED: dict[str, tuple[str, str, Callable[[], Any]]] = {
    "erf": ("Erf", "the_erf", lambda: zoo.onnx_helper_model(
        [N("Erf", ["x"], ["y"], name="the_erf")], {"x": (1, 3)}, "y")),
    "lpnorm": ("LpNormalization", "y", lambda: zoo.onnx_helper_model(
        [N("LpNormalization", ["x"], ["y"])], {"x": (1, 3)}, "y")),
    "argmax": ("ArgMax", "am", lambda: zoo.onnx_helper_model(
        [N("ArgMax", ["x"], ["i"], axis=1, name="am"), N("Cast", ["i"], ["f"], to=1), N("Add", ["x", "f"], ["y"])],
        {"x": (1, 3)}, "y")),
    "cast_to_indices": ("Cast", "i", lambda: zoo.onnx_helper_model(
        [N("Cast", ["x"], ["i"], to=TensorProto.INT64), N("Gather", ["c", "i"], ["y"], axis=0, name="gi")],
        {"x": (1, 2)}, "y", {"c": _w(5)})),
    "conv_1d": ("Conv", "c1", lambda: zoo.onnx_helper_model(
        [N("Conv", ["x", "w"], ["y"], name="c1")], {"x": (1, 2, 5)}, "y", {"w": _w(3, 2, 3)})),
    "gemm_transA": ("Gemm", "g", lambda: zoo.onnx_helper_model(
        [N("Gemm", ["x", "B"], ["y"], transA=1, name="g")], {"x": (4, 1)}, "y", {"B": _w(4, 3)})),
    "maxpool_indices": ("MaxPool", "p", lambda: zoo.onnx_helper_model(
        [N("MaxPool", ["x"], ["v", "i"], kernel_shape=[2, 2], name="p"), N("Cast", ["i"], ["f"], to=1),
         N("Add", ["v", "f"], ["y"])], {"x": (1, 1, 4, 4)}, "y")),
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_unsupported_op_names_op_and_node(case: str, tmp_path: Path) -> None:
    op_type, node_name, build = UNSUPPORTED[case]
    path = zoo.save(build(), tmp_path / f"{case}.onnx")
    with pytest.raises(UnsupportedOp) as info:
        load_onnx(path)
    assert (info.value.op_type, info.value.node_name) == (op_type, node_name)
    assert op_type in str(info.value) and node_name in str(info.value)


def test_conv_with_unknown_auto_pad_is_unsupported() -> None:
    model = _conv_model({"auto_pad": "SAME_UPPER"})
    model.graph.node[0].attribute[0].s = b"FANCY"
    with pytest.raises(UnsupportedOp, match="auto_pad"):
        load_onnx_model(model, "fancy")


def _one_line_model_error(path: Path) -> str:
    with pytest.raises(ModelError) as info:
        load_onnx(path)
    assert not isinstance(info.value, UnsupportedOp)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_truncated_file_is_a_model_error(tmp_path: Path) -> None:
    data = (BENCHMARKS / "mnistfc" / "mnist-net_256x2.onnx").read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    _one_line_model_error(path)


def test_truncated_zoo_model_is_a_model_error(tmp_path: Path) -> None:
    path = zoo.export(zoo.dense(0, [4, 16, 2]), (4,), tmp_path / "full.onnx")
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) // 3, 7):
        bad = tmp_path / f"cut{cut}.onnx"
        bad.write_bytes(data[:cut])
        _one_line_model_error(bad)


def test_missing_and_garbage_files_are_model_errors(tmp_path: Path) -> None:
    _one_line_model_error(tmp_path / "does_not_exist.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\xfe not an onnx model at all \x00\x01")
    _one_line_model_error(garbage)


def test_two_graph_inputs_are_a_model_error(tmp_path: Path) -> None:
    model = zoo.onnx_helper_model([N("Add", ["a", "b"], ["y"])], {"a": (1, 3), "b": (1, 3)}, "y")
    message = _one_line_model_error(zoo.save(model, tmp_path / "two_inputs.onnx"))
    assert "input" in message


def test_output_independent_of_input_is_a_model_error(tmp_path: Path) -> None:
    model = zoo.onnx_helper_model([N("Identity", ["c"], ["y"]), N("Relu", ["x"], ["r"])],
                                  {"x": (1, 3)}, "y", {"c": _w(3)})
    _one_line_model_error(zoo.save(model, tmp_path / "constant_output.onnx"))
