"""The independent proof checker (certify.proof.check): the chain it reads against onnxruntime,
its rounding against exact fractions, hand-made certificates (accepted ones held to dense
sampling of the box), and mutated certificates, each rejected with a reason naming what failed."""

from __future__ import annotations

import ast
import dataclasses
import io
import itertools
import time
from collections.abc import Callable
from fractions import Fraction
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from certify.proof.certificate import Certificate, CertificateBuilder, Edge, model_digest, problem_digest
from certify.proof.check import check_certificate, parse_chain
from certify.proof.check.chain import ChainError
from certify.proof.check.propagate import chord
from certify.proof.check.rounding import dot, imul, lin_lower, mm, sum_down
from tests.zoo import onnx_helper_model

PACKAGE = Path(__file__).resolve().parents[2] / "certify" / "proof" / "check"

Unsafe = list[tuple[np.ndarray, np.ndarray]]


def run_ort(model: bytes, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The model's outputs on the rows of ``x`` (one at a time, batch dimension 1)."""
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.stack([sess.run(None, {name: row.reshape(shape).astype(np.float32)})[0].reshape(-1) for row in x])


# -- the chain ---------------------------------------------------------------------------------

def _helper_nets() -> list[tuple[str, bytes, tuple[int, ...]]]:
    rng = np.random.default_rng(0)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
    nets = []
    m = onnx_helper_model([
        helper.make_node("Sub", ["x", "mean"], ["a"]), helper.make_node("Div", ["a", "std"], ["b"]),
        helper.make_node("Gemm", ["b", "W0", "b0"], ["c"], transB=1), helper.make_node("Relu", ["c"], ["d"]),
        helper.make_node("MatMul", ["d", "W1"], ["e"]), helper.make_node("Add", ["e", "b1"], ["f"]),
        helper.make_node("Relu", ["f"], ["g"]),
        helper.make_node("Gemm", ["g", "W2", "b2"], ["y"], alpha=0.5, beta=1.7),
    ], {"x": [1, 5]}, "y", {"mean": f32(5), "std": np.abs(f32(5)) + 0.1, "W0": f32(7, 5), "b0": f32(7),
                            "W1": f32(7, 6), "b1": f32(6), "W2": f32(6, 3), "b2": f32(3)})
    nets.append(("gemm-matmul-normalise", m.SerializeToString(), (1, 5)))
    m = onnx_helper_model([
        helper.make_node("Conv", ["x", "K", "kb"], ["a"], pads=[1, 0, 2, 1], strides=[2, 1], dilations=[1, 2],
                         group=2),
        helper.make_node("BatchNormalization", ["a", "g", "be", "mu", "var"], ["b"], epsilon=1e-3),
        helper.make_node("Relu", ["b"], ["c"]), helper.make_node("Flatten", ["c"], ["d"]),
        helper.make_node("Gemm", ["d", "W", "wb"], ["y"], transB=1),
    ], {"x": [1, 2, 6, 5]}, "y", {"K": f32(4, 1, 3, 2), "kb": f32(4), "g": f32(4), "be": f32(4), "mu": f32(4),
                                  "var": np.abs(f32(4)) + 0.2, "W": f32(3, 4 * 4 * 4), "wb": f32(3)})
    nets.append(("conv-batchnorm", m.SerializeToString(), (1, 2, 6, 5)))
    shape = helper.make_node("Constant", [], ["s"], value=helper.make_tensor("s", onnx.TensorProto.INT64, [2],
                                                                            [0, -1]))
    m = onnx_helper_model([
        shape, helper.make_node("Reshape", ["x", "s"], ["a"]), helper.make_node("Unsqueeze", ["a", "ax"], ["b"]),
        helper.make_node("Squeeze", ["b", "ax"], ["c"]), helper.make_node("Mul", ["c", "k"], ["d"]),
        helper.make_node("Sub", ["k", "d"], ["e"]), helper.make_node("Identity", ["e"], ["f"]),
        helper.make_node("Dropout", ["f"], ["h"]), helper.make_node("Relu", ["h"], ["i"]),
        helper.make_node("Reshape", ["i", "col"], ["i2"]), helper.make_node("MatMul", ["M", "i2"], ["y"]),
    ], {"x": [1, 2, 3]}, "y", {"ax": np.array([0], np.int64), "k": f32(1, 6), "M": f32(4, 6),
                               "col": np.array([6, 1], np.int64)})
    nets.append(("shapes-constants", m.SerializeToString(), (1, 2, 3)))
    return nets


def _torch_net() -> tuple[str, bytes, tuple[int, ...]]:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, stride=2, padding=1), torch.nn.BatchNorm2d(3),
                                 torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 8),
                                 torch.nn.ReLU(), torch.nn.Linear(8, 4))
    with torch.no_grad():
        module[1].running_mean.uniform_(-1, 1)
        module[1].running_var.uniform_(0.5, 2)
    module.eval()
    buf = io.BytesIO()
    torch.onnx.export(module, (torch.zeros(1, 1, 8, 8),), buf, dynamo=False)
    return "torch-conv-bn", buf.getvalue(), (1, 1, 8, 8)


@pytest.mark.parametrize("net", [*_helper_nets(), _torch_net()], ids=lambda n: n[0])
def test_chain_matches_onnxruntime(net: tuple[str, bytes, tuple[int, ...]]) -> None:
    _, model, shape = net
    chain = parse_chain(model)
    x = np.random.default_rng(1).uniform(-2, 2, (20, int(np.prod(shape))))
    np.testing.assert_allclose(chain.forward(x), run_ort(model, x, shape), rtol=1e-5, atol=1e-5)


def test_unsupported_op_and_non_chain_are_named() -> None:
    m = onnx_helper_model([helper.make_node("Gemm", ["x", "W"], ["a"], transB=1),
                           helper.make_node("Softmax", ["a"], ["y"], name="sm")], {"x": [1, 2]}, "y",
                          {"W": np.ones((2, 2))}).SerializeToString()
    with pytest.raises(ChainError, match="op Softmax at node 'sm' is not supported by the checker"):
        parse_chain(m)
    lo, hi, unsafe = _box_unsafe(2, 2, 0.0)
    cert = _root_only(1).build(model_digest(m), problem_digest(lo, hi, unsafe), [], [1])
    res = check_certificate(cert, m, lo, hi, unsafe)
    assert not res.valid and "Softmax" in res.reason and "'sm'" in res.reason
    residual = onnx_helper_model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Add", ["a", "x"], ["y"])],
                                 {"x": [1, 2]}, "y").SerializeToString()
    with pytest.raises(ChainError, match="not a chain"):
        parse_chain(residual)
    with pytest.raises(ChainError, match="not a readable ONNX"):
        parse_chain(b"not a model")


# -- rounding ----------------------------------------------------------------------------------

finite = st.floats(min_value=-1e300, max_value=1e300, allow_nan=False, allow_infinity=False)
wide = st.one_of(finite, st.sampled_from([1e16, -1e16, 1.0, -1.0, 3e-320, -5e-324, 0.0, 1e-300]))


def _exact_dot(a: np.ndarray, b: np.ndarray) -> Fraction:
    return sum((Fraction(float(x)) * Fraction(float(y)) for x, y in zip(a, b)), Fraction(0))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: st.tuples(st.lists(wide, min_size=n, max_size=n),
                                                      st.lists(wide, min_size=n, max_size=n))))
def test_dot_and_matmul_bounds_contain_the_exact_result(ab: tuple[list[float], list[float]]) -> None:
    a, b = np.array(ab[0]), np.array(ab[1])
    with np.errstate(over="ignore"):
        if not np.all(np.isfinite(a * b)) or not np.isfinite(np.abs(a) @ np.abs(b)):
            return  # overflow: not what this checks
    exact = _exact_dot(a, b)
    for c, e in (dot(a, b), mm(a[None, :], b[:, None])):
        c, e = float(np.asarray(c).reshape(-1)[0]), float(np.asarray(e).reshape(-1)[0])
        assert Fraction(c) - Fraction(e) <= exact <= Fraction(c) + Fraction(e)
    assert Fraction(float(sum_down(a * 0 + a))) <= sum((Fraction(float(x)) for x in a), Fraction(0))


def test_cancellation_is_charged() -> None:
    a, b = np.array([1e16, 1.0, -1e16]), np.ones(3)
    assert sum(a.tolist()) == 0.0  # float64, left to right, loses the 1 ...
    for c, e in (dot(a, b), mm(a[None, :], b[:, None])):  # ... the bounds keep it, whatever the order
        c, e = Fraction(float(np.reshape(c, -1)[0])), Fraction(float(np.reshape(e, -1)[0]))
        assert c - e <= 1 <= c + e
    assert float(sum_down(np.array([1e16, -1.0, -1e16]))) <= -1
    # the minimum of lam . v over the box [c - r, c + r], exact: lam . c - |lam| . r
    lam, cen, rad = np.array([[1e16, 1.0, -1e16]]), np.array([1.0, 0.5, 1.0]), np.array([0.0, 0.25, 0.0])
    assert Fraction(float(lin_lower(lam, cen, rad)[0])) <= Fraction(1, 2) - Fraction(1, 4)


@settings(max_examples=200, deadline=None)
@given(finite, finite, finite, finite)
def test_interval_product_and_chord(a: float, b: float, c: float, d: float) -> None:
    (alo, ahi), (blo, bhi) = sorted((a, b)), sorted((c, d))
    with np.errstate(over="ignore"):
        lo, hi = imul(np.array([alo]), np.array([ahi]), np.array([blo]), np.array([bhi]))
    if np.isfinite(lo[0]) and np.isfinite(hi[0]):
        for x in (alo, ahi):
            for y in (blo, bhi):
                assert Fraction(float(lo[0])) <= Fraction(x) * Fraction(y) <= Fraction(float(hi[0]))
    if alo < 0 < ahi and abs(alo) < 1e150 and ahi < 1e150:
        s, t = chord(np.array([alo]), np.array([ahi]))
        s, t = Fraction(float(s[0])), Fraction(float(t[0]))
        assert s * Fraction(alo) + t >= 0 and s * Fraction(ahi) + t >= Fraction(ahi)  # above relu at both ends


# -- hand-made certificates --------------------------------------------------------------------

def mlp(seed: int, sizes: tuple[int, ...]) -> tuple[bytes, list[np.ndarray]]:
    """A Gemm/ReLU net (float32 weights) and its weights ``[W0, b0, W1, b1, ...]``."""
    rng = np.random.default_rng(seed)
    nodes, init, cur, params = [], {}, "x", []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((b, a)) / np.sqrt(a)).astype(np.float32)
        bias = (rng.standard_normal(b) * 0.3).astype(np.float32)
        init[f"W{i}"], init[f"b{i}"] = w, bias
        params += [w, bias]
        nodes.append(helper.make_node("Gemm", [cur, f"W{i}", f"b{i}"], [f"g{i}"], transB=1))
        cur = f"g{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"]))
            cur = f"r{i}"
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    return onnx_helper_model(nodes, {"x": [1, sizes[0]]}, "y", init).SerializeToString(), params


def _box_unsafe(n_in: int, n_out: int, b: float, width: float = 0.5) -> tuple[np.ndarray, np.ndarray, Unsafe]:
    """The box ``[-width, width]^n`` and the unsafe set ``y_0 <= b``."""
    a = np.zeros((1, n_out))
    a[0, 0] = 1.0
    return np.full(n_in, -width), np.full(n_in, width), [(a, np.array([b]))]


def _root_only(k: int) -> CertificateBuilder:
    cb = CertificateBuilder(k)
    for d in range(k):
        cb.close(0, d, np.ones(1))
    return cb


def _stamp(cb: CertificateBuilder | Certificate, model: bytes, lo: np.ndarray, hi: np.ndarray, unsafe: Unsafe,
           ) -> Certificate:
    """The built certificate, stamped with the digests of ``model`` and the problem."""
    if isinstance(cb, Certificate):
        return dataclasses.replace(cb, model_sha256=model_digest(model), problem_sha256=problem_digest(lo, hi, unsafe))
    relu = parse_chain(model).relu_sizes
    return cb.build(model_digest(model), problem_digest(lo, hi, unsafe), relu, [a.shape[0] for a, _ in unsafe])


def _check(cb: CertificateBuilder | Certificate, model: bytes, b: float, n_in: int, n_out: int):
    lo, hi, unsafe = _box_unsafe(n_in, n_out, b)
    return check_certificate(_stamp(cb, model, lo, hi, unsafe), model, lo, hi, unsafe)


def threshold(make: Callable[[], CertificateBuilder], model: bytes, n_in: int, n_out: int) -> float:
    """The largest ``b`` for which the certificate ``make()`` proves ``y_0 > b`` (bisection), after
    checking that it is rejected at the sampled minimum (where ``y_0 <= b`` is violated)."""
    y_min = _sampled_min(model, n_in)
    assert not _check(make(), model, y_min, n_in, n_out).valid
    lo, hi = y_min - 50.0, y_min
    assert _check(make(), model, lo, n_in, n_out).valid
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _check(make(), model, mid, n_in, n_out).valid else (lo, mid)
    return lo


def _sampled_min(model: bytes, n_in: int, width: float = 0.5) -> float:
    """min y_0 over a dense sample of the box (corners included), by onnxruntime."""
    rng = np.random.default_rng(7)
    corners = np.array(np.meshgrid(*[[-width, width]] * n_in)).reshape(n_in, -1).T
    x = np.concatenate([rng.uniform(-width, width, (4000, n_in)), corners])
    return float(run_ort(model, x, (1, n_in))[:, 0].min())


NET = (3, 8, 8, 2)


def _input_split() -> CertificateBuilder:
    cb = CertificateBuilder(1)
    low, high = cb.split(np.array([0]), Edge.INPUT_LOW, np.array([0]), np.array([0.0]))
    cb.close(int(low[0]), 0, np.ones(1))
    cb.close(int(high[0]), 0, np.ones(1))
    return cb


def _unstable_first_neuron(params: list[np.ndarray], n_in: int) -> int:
    x = np.random.default_rng(3).uniform(-0.5, 0.5, (2000, n_in))
    z = x @ params[0].astype(np.float64).T + params[1]
    return int(np.argmax((z.min(0) < -0.05) & (z.max(0) > 0.05)))


def _neuron_split(j: int, beta: float = 0.05) -> CertificateBuilder:
    cb = CertificateBuilder(1)
    low, high = cb.split(np.array([0]), Edge.NEURON_LOW, np.array([j]), np.array([0.0]))
    for node, side in ((int(low[0]), -1), (int(high[0]), 1)):
        cb.close(node, 0, np.ones(1), beta=(np.array([j]), np.array([side]), np.zeros(1), np.array([beta])))
    return cb


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_certificates_accepted_are_true_and_input_splits_help(seed: int) -> None:
    model, _ = mlp(seed, NET)
    y_min = _sampled_min(model, NET[0])
    root = threshold(lambda: _root_only(1), model, NET[0], NET[-1])
    split = threshold(_input_split, model, NET[0], NET[-1])
    assert root < y_min and split < y_min  # no sampled point is unsafe where accepted
    assert split > root + 1e-6  # the halves prove what the root alone cannot
    b = 0.5 * (root + split)
    assert not _check(_root_only(1), model, b, NET[0], NET[-1]).valid
    assert _check(_input_split(), model, b, NET[0], NET[-1]).valid


@pytest.mark.parametrize("seed", [1, 2])
def test_neuron_splits_with_beta_are_accepted_and_true(seed: int) -> None:
    """A split neuron is exact on each half, but the bound's minimum over the box forgets the
    split: beta puts it back (here one multiplier for both halves, on a grid)."""
    model, params = mlp(seed, NET)
    y_min = _sampled_min(model, NET[0])
    j = _unstable_first_neuron(params, NET[0])
    found = [threshold(partial(_neuron_split, j, beta), model, NET[0], NET[-1]) for beta in (0.0, 0.1, 0.3)]
    assert max(found) < y_min
    assert max(found[1:]) > found[0] + 1e-3


def test_several_disjuncts_and_same_children() -> None:
    model, _ = mlp(4, NET)
    y_min = _sampled_min(model, NET[0])
    lo, hi = np.full(3, -0.5), np.full(3, 0.5)
    unsafe = [(np.array([[1.0, 0.0]]), np.array([y_min - 5.0])),
              (np.array([[-1.0, 0.0], [0.0, 1.0]]), np.array([-1e3, 0.0]))]

    def same(masks: list[list[bool]]) -> Certificate:
        cb = CertificateBuilder(2)
        for m in masks:
            node = cb.same(0, np.array(m))
            for d in np.nonzero(m)[0]:
                cb.close(node, int(d), np.ones(1) if d == 0 else np.array([1.0, 0.0]))
        return _stamp(cb, model, lo, hi, unsafe)

    assert check_certificate(same([[True, False], [False, True]]), model, lo, hi, unsafe).valid
    res = check_certificate(same([[True, False], [True, False]]), model, lo, hi, unsafe)
    assert not res.valid and "node 0: its SAME children leave disjunct 1 open" in res.reason


def test_empty_regions_need_no_closure() -> None:
    model, params = mlp(0, NET)
    j = _unstable_first_neuron(params, NET[0])

    def cert(point: float) -> CertificateBuilder:
        cb = CertificateBuilder(1)
        low, _ = cb.split(np.array([0]), Edge.NEURON_LOW, np.array([j]), np.array([point]))
        cb.close(int(low[0]), 0, np.ones(1))
        return cb  # the HIGH half has no closure: fine only where it is empty

    y_min = _sampled_min(model, NET[0])
    assert _check(cert(1e3), model, y_min - 10.0, NET[0], NET[-1]).valid
    res = _check(cert(0.0), model, y_min - 10.0, NET[0], NET[-1])
    assert not res.valid and res.reason == "node 2 (leaf): disjunct 0 is not ruled out (no closure)"


def test_slope_tables_keep_bounds_sound() -> None:
    model, _ = mlp(5, (3, 8, 8, 8, 2))
    rng = np.random.default_rng(0)
    tables = {(node, layer): (rng.uniform(0, 1, (8, 8 * layer)), rng.uniform(0, 1, (8, 8 * layer)))
              for node in (0, 1) for layer in (1, 2)}

    def cert(scale: float = 1.0) -> CertificateBuilder:
        cb = _input_split()
        for (node, layer), (lower, upper) in tables.items():
            cb.slopes(node, layer, np.arange(8), lower * scale, upper)
        return cb

    assert threshold(cert, model, 3, 2) < _sampled_min(model, 3)
    res = _check(cert(1.5), model, -100.0, 3, 2)
    assert not res.valid and "slope_lower" in res.reason and "is not in [0, 1]" in res.reason


# -- mutations ---------------------------------------------------------------------------------

def _tree(j: int, beta: float = 0.05, leave: str = "") -> CertificateBuilder:
    """A split on neuron ``j`` at the root (nodes 1, 2); its LOW half split on input 0 (nodes 3,
    4); closures (node 2, 3, 4) with alpha and beta; ``leave`` "closure": none on node 2."""
    cb = CertificateBuilder(1)
    low, high = cb.split(np.array([0]), Edge.NEURON_LOW, np.array([j]), np.array([0.0]))
    xl, xh = cb.split(low, Edge.INPUT_LOW, np.array([0]), np.array([0.0]))
    alpha = (np.array([9, 10]), np.array([0.25, 1.0]))
    for node, side in ((int(high[0]), 1), (int(xl[0]), -1), (int(xh[0]), -1)):
        if not (leave == "closure" and node == 2):
            cb.close(node, 0, np.ones(1), alpha=alpha,
                     beta=(np.array([j]), np.array([side]), np.zeros(1), np.array([beta])))
    return cb


@pytest.fixture(scope="module")
def tight() -> tuple[bytes, list[np.ndarray], int, float]:
    """A net, its unstable neuron, and the largest threshold the tree proves (within 1e-12)."""
    model, params = mlp(0, NET)
    j = _unstable_first_neuron(params, NET[0])
    return model, params, j, threshold(lambda: _tree(j), model, NET[0], NET[-1])


def _mutate(cert: Certificate, **arrays: np.ndarray) -> Certificate:
    return dataclasses.replace(cert, **arrays)


def test_mutations_are_rejected_with_their_reason(tight: tuple[bytes, list[np.ndarray], int, float]) -> None:
    model, _, j, b = tight
    lo, hi, unsafe = _box_unsafe(3, 2, b - 1e-9)
    good = _stamp(_tree(j), model, lo, hi, unsafe)
    assert check_certificate(good, model, lo, hi, unsafe).valid

    def reason(cert: Certificate) -> str:
        res = check_certificate(cert, model, lo, hi, unsafe)
        assert not res.valid
        return res.reason

    n, c = good.n_nodes, good.n_closures  # drop the last node (a leaf) and its closure, the last
    assert good.closure_node[-1] == n - 1 and np.sum(good.closure_node == n - 1) == 1
    w, a, bt = good.weights_ptr[-2], good.alpha_ptr[-2], good.beta_ptr[-2]
    dropped = _mutate(good, parent=good.parent[:-1], edge=good.edge[:-1], index=good.index[:-1], point=good.point[:-1],
                      closure_node=good.closure_node[:-1], closure_disjunct=good.closure_disjunct[:-1],
                      weights_ptr=good.weights_ptr[:-1], weights=good.weights[:w], alpha_ptr=good.alpha_ptr[:-1],
                      alpha_index=good.alpha_index[:a], alpha=good.alpha[:a], beta_ptr=good.beta_ptr[:-1],
                      beta_index=good.beta_index[:bt], beta_side=good.beta_side[:bt], beta_point=good.beta_point[:bt],
                      beta=good.beta[:bt])
    assert dropped.n_nodes == n - 1 and dropped.n_closures == c - 1
    assert "node 1: its children (INPUT_LOW x1) are neither a LOW and HIGH pair" in reason(dropped)
    no_closure = _stamp(_tree(j, leave="closure"), model, lo, hi, unsafe)
    assert reason(no_closure) == "node 2 (leaf): disjunct 0 is not ruled out (no closure)"
    alpha = good.alpha.copy()
    alpha[1] = 1.5
    assert "node 2, closure 0: alpha 1.5 is not in [0, 1]" in reason(_mutate(good, alpha=alpha))
    alpha[1] = np.nan
    assert "alpha nan is not in [0, 1]" in reason(_mutate(good, alpha=alpha))
    beta = good.beta.copy()
    beta[0] = -0.05
    assert "node 2, closure 0: beta -0.05 is not finite and >= 0" in reason(_mutate(good, beta=beta))
    weights = good.weights.copy()
    weights[1] = -1.0
    assert "node 3, closure 1: weight -1.0 is not finite and >= 0" in reason(_mutate(good, weights=weights))
    point = good.point.copy()
    point[3], point[4] = 0.4, 0.6  # the input split's halves x0 <= 0.4 and x0 >= 0.6
    assert "node 1: the halves leave a gap" in reason(_mutate(good, point=point))
    point[3], point[4] = 0.7, 0.7
    assert reason(_mutate(good, point=point)) == ("node 3 (INPUT_LOW): point 0.7 is outside the parent's range "
                                                  "[-0.5, 0.5] of input 0")
    parent = good.parent.copy()
    parent[3] = 4
    assert "node 3: its parent 4 does not come before it" in reason(_mutate(good, parent=parent))
    side = good.beta_side.copy()
    side[0] = -1  # z_j <= 0 on the half where z_j >= 0 (and z_j > 0.05 somewhere): false there
    assert reason(_mutate(good, beta_side=side)).startswith(
        f"node 2, closure 0: beta constraint z[{j}] <= 0.0 does not hold on the region")


def test_a_passed_deadline_stops_the_check(tight: tuple[bytes, list[np.ndarray], int, float]) -> None:
    model, _, j, b = tight
    lo, hi, unsafe = _box_unsafe(3, 2, b - 1e-6)
    cert = _stamp(_tree(j), model, lo, hi, unsafe)
    assert check_certificate(cert, model, lo, hi, unsafe, deadline=time.monotonic() + 60).valid
    res = check_certificate(cert, model, lo, hi, unsafe, deadline=time.monotonic() - 1)
    assert not res.valid and res.out_of_time and "deadline" in res.reason


def test_unsplit_beta_constraint_is_rejected(tight: tuple[bytes, list[np.ndarray], int, float]) -> None:
    model, _, j, b = tight
    cb = CertificateBuilder(1)
    cb.close(0, 0, np.ones(1), beta=(np.array([j]), np.array([1]), np.zeros(1), np.zeros(1)))  # even with beta 0
    res = _check(cb, model, b - 10.0, 3, 2)
    assert not res.valid and f"node 0, closure 0: beta constraint z[{j}] >= 0.0 does not hold" in res.reason


def test_changed_model_or_property_is_rejected(tight: tuple[bytes, list[np.ndarray], int, float]) -> None:
    model, _, j, b = tight
    lo, hi, unsafe = _box_unsafe(3, 2, b - 1e-6)
    cert = _stamp(_tree(j), model, lo, hi, unsafe)
    assert check_certificate(cert, model, lo, hi, unsafe).valid

    def changed(name: str, index: tuple[int, ...]) -> bytes:
        """The model with one parameter lowered by 1e-3."""
        proto = onnx.load_from_string(model)
        for t in proto.graph.initializer:
            if t.name == name:
                arr = onnx.numpy_helper.to_array(t).copy()
                arr[index] -= 1e-3
                t.CopyFrom(onnx.numpy_helper.from_array(arr, name))
        return proto.SerializeToString()

    weight = changed("W1", (0, 0))
    res = check_certificate(cert, weight, lo, hi, unsafe)
    assert not res.valid and "made for another model" in res.reason
    bias = changed("b2", (0,))  # the output's bias: y_0 drops by 1e-3 everywhere, the proof had 1e-6 to spare
    res = check_certificate(_stamp(cert, bias, lo, hi, unsafe), bias, lo, hi, unsafe)
    assert not res.valid and "lower bound" in res.reason and "is not > 0" in res.reason
    tighter = [(unsafe[0][0], unsafe[0][1] + 1e-3)]
    res = check_certificate(cert, model, lo, hi, tighter)
    assert not res.valid and "made for another property" in res.reason
    res = check_certificate(_stamp(cert, model, lo, hi, tighter), model, lo, hi, tighter)
    assert not res.valid and "is not > 0" in res.reason
    res = check_certificate(_stamp(cert, model, lo, hi, [(np.ones((2, 2)), np.zeros(2))]), model, lo, hi,
                            [(np.ones((2, 2)), np.zeros(2))])
    assert not res.valid and "rows [2] per disjunct, the certificate [1]" in res.reason


def test_zero_margin_that_float64_rounds_positive_is_rejected() -> None:
    """y = (1e16 x - x - 1e16 x) = -x on x = 1: y = -1, unsafe y <= -0.5 holds there.  Float64
    loses the -x: naive propagation sees y = 0 and a margin of +0.5."""
    w1, w2 = np.array([[1e16], [-1.0], [-1e16]]), np.ones((1, 3))
    model = onnx_helper_model([helper.make_node("Gemm", ["x", "W1"], ["h"], transB=1),
                               helper.make_node("Gemm", ["h", "W2"], ["y"], transB=1)],
                              {"x": [1, 1]}, "y", {"W1": w1.astype(np.float64), "W2": w2.astype(np.float64)})
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    model = model.SerializeToString()
    lo = hi = np.ones(1)
    unsafe = [(np.ones((1, 1)), np.array([-0.5]))]
    naive = (np.ones(1) @ w2 @ w1) @ lo - unsafe[0][1]
    assert naive[0] > 0  # what a float64 checker would accept
    res = check_certificate(_stamp(_root_only(1), model, lo, hi, unsafe), model, lo, hi, unsafe)
    assert not res.valid and "is not > 0" in res.reason


# -- the package's imports ---------------------------------------------------------------------

def test_checker_imports_only_numpy_onnx_and_the_format() -> None:
    allowed = {"numpy", "onnx", "certify.proof.certificate"}
    stdlib = {"__future__", "collections", "dataclasses", "fractions", "functools", "math", "time", "typing",
              "hashlib", "enum", "itertools"}
    files = sorted(PACKAGE.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "chain.py", "rounding.py", "propagate.py", "tree.py"}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{f.name}: relative import"
            for name in names:
                top = name.split(".")[0]
                ok = top in stdlib or top in {"numpy", "onnx"} or name in allowed or \
                    name.startswith("certify.proof.check")
                assert ok, f"{f.name}:{node.lineno} imports {name}"
