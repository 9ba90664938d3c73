"""Robustness lowering: the box is exactly the clipped ball, the unsafe set exactly "a target wins"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from certify.errors import ShapeMismatch, SpecError
from certify.io.yaml import parse_spec
from certify.lower import LOWERINGS, lower, lower_document, predict
from certify.network import Network, Node, Op
from certify.spec import KINDS, LocalRobustness

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "case_studies" / "quickstart"


def mlp(n_in: int, n_out: int, seed: int = 0, input_shape: tuple[int, ...] | None = None) -> Network:
    """input -> [reshape] -> linear(8) -> relu -> linear(n_out), random float32 weights."""
    g = torch.Generator().manual_seed(seed)
    shape = input_shape or (n_in,)
    nodes = [Node("x", Op.INPUT, (), shape)]
    prev = "x"
    if shape != (n_in,):
        nodes.append(Node("flat", Op.RESHAPE, ("x",), (n_in,), attrs={"shape": (n_in,)}))
        prev = "flat"
    nodes += [
        Node("fc1", Op.LINEAR, (prev,), (8,),
             params={"weight": torch.randn(n_in, 8, generator=g), "bias": torch.randn(8, generator=g)}),
        Node("relu", Op.RELU, ("fc1",), (8,)),
        Node("fc2", Op.LINEAR, ("relu",), (n_out,),
             params={"weight": torch.randn(8, n_out, generator=g), "bias": torch.randn(n_out, generator=g)}),
    ]
    return Network(tuple(nodes), output="fc2")


def robustness(x0: np.ndarray | list, eps: float, **fields: object) -> LocalRobustness:
    return LocalRobustness(input=np.asarray(x0).tolist(), eps=eps, **fields)


def test_every_kind_has_a_lowering() -> None:
    assert set(KINDS) == set(LOWERINGS)


# -- the box ------------------------------------------------------------------------

vectors = st.integers(1, 6).flatmap(
    lambda n: st.lists(st.floats(-2, 2, allow_nan=False), min_size=n, max_size=n)
)
clips = st.one_of(
    st.none(),
    st.tuples(st.floats(-2, 2), st.floats(-2, 2)).map(lambda t: (min(t), max(t))),
)


@settings(max_examples=150, deadline=None)
@given(x0=vectors, eps=st.floats(1e-3, 1.0), clip=clips, seed=st.integers(0, 2**31))
def test_box_is_the_clipped_ball(x0: list[float], eps: float, clip: tuple[float, float] | None,
                                 seed: int) -> None:
    x = np.asarray(x0)
    net = mlp(len(x0), 3)
    prop = robustness(x, eps, clip=clip)
    lo, hi = clip if clip is not None else (-np.inf, np.inf)
    if np.any(x - eps > hi) or np.any(x + eps < lo):  # the ball misses the domain
        with pytest.raises(SpecError, match="clip"):
            lower(prop, net)
        return
    (lowered,) = lower(prop, net)
    box = lowered.problem.box
    assert box.shape == net.input_shape
    assert box.contains(np.clip(x, lo, hi))

    rng = np.random.default_rng(seed)
    u = rng.uniform(-1.5, 1.5, size=(64, len(x0)))
    u[:4] = [np.full(len(x0), s) for s in (-1.0, 1.0, -1.5, 1.5)]
    points = x + eps * u
    tol = 1e-9
    for p, ui in zip(points, u):
        in_ball = np.all(np.abs(ui) <= 1)
        in_clip = np.all((p >= lo) & (p <= hi))
        if in_ball and in_clip:  # every point of the clipped ball is in the box ...
            assert box.contains(p, tol=tol)
        if box.contains(p):  # ... and every point of the box is in the clipped ball
            assert np.all(np.abs(p - x) <= eps + tol) and np.all((p >= lo - tol) & (p <= hi + tol))
    for corner in (box.lower, box.upper):
        assert np.all(np.abs(corner - x) <= eps + tol)


def test_box_takes_the_input_shape() -> None:
    net = mlp(4, 3, input_shape=(2, 2))
    (lowered,) = lower(robustness([0.1, 0.2, 0.3, 0.4], 0.1), net)
    assert lowered.problem.box.shape == (2, 2)
    np.testing.assert_allclose(lowered.problem.box.center, [[0.1, 0.2], [0.3, 0.4]])


def test_size_mismatch_names_both_sizes() -> None:
    with pytest.raises(ShapeMismatch) as info:
        lower(robustness(np.zeros(5), 0.1), mlp(4, 3))
    assert "5" in str(info.value) and "4" in str(info.value)


# -- the unsafe set -----------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    n_out=st.integers(2, 6),
)
def test_unsafe_means_a_target_scores_at_least_the_label(data: st.DataObject, n_out: int) -> None:
    label = data.draw(st.integers(0, n_out - 1))
    others = [j for j in range(n_out) if j != label]
    targets = data.draw(st.none() | st.lists(st.sampled_from(others), min_size=1, unique=True))
    y = np.asarray(data.draw(st.lists(st.floats(-10, 10), min_size=n_out, max_size=n_out)))
    (lowered,) = lower(robustness(np.zeros(3), 0.1, label=label, targets=targets), mlp(3, n_out))
    counted = others if targets is None else targets
    unsafe = lowered.problem.violation(y) <= 0
    assert unsafe == any(y[j] >= y[label] for j in counted)
    if all(y[label] > y[j] for j in others):  # label strictly max: safe
        assert not unsafe


def test_one_disjunct_per_target() -> None:
    (all_,) = lower(robustness(np.zeros(3), 0.1, label=1), mlp(3, 5))
    assert len(all_.problem.unsafe) == 4
    (some,) = lower(robustness(np.zeros(3), 0.1, label=1, targets=[0, 4]), mlp(3, 5))
    assert len(some.problem.unsafe) == 2


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_predicted_label_is_the_argmax(seed: int) -> None:
    net = mlp(4, 5, seed=seed)
    x0 = np.random.default_rng(seed).normal(size=4)
    (lowered,) = lower(robustness(x0, 0.1), net)
    with torch.no_grad():
        expected = int(net(torch.tensor(x0, dtype=torch.float32)[None]).argmax())
    assert lowered.problem.meta["label"] == str(expected)
    assert lowered.problem.violation(predict(net, x0)) > 0  # x0 itself is safe


def test_label_and_targets_out_of_range() -> None:
    net = mlp(3, 4)
    with pytest.raises(SpecError, match="label: 4"):
        lower(robustness(np.zeros(3), 0.1, label=4), net)
    with pytest.raises(SpecError, match=r"targets: \[7\]"):
        lower(robustness(np.zeros(3), 0.1, label=0, targets=[1, 7]), net)


# -- lift, files, documents -----------------------------------------------------------

def test_lift_reports_the_perturbation() -> None:
    net = mlp(3, 4)
    x0 = np.array([0.2, 0.5, 0.9])
    (lowered,) = lower(robustness(x0, 0.1, clip=(0, 1)), net)
    x = lowered.problem.box.upper
    lifted = lowered.lift(x)
    np.testing.assert_allclose(lifted["perturbation"], x - x0)
    assert lifted["linf"] == pytest.approx(0.1)
    assert lifted["predicted"] == int(np.argmax(predict(net, x)))
    assert lifted["label"] == int(lowered.problem.meta["label"])


def test_npy_input_and_document_errors_name_the_property(tmp_path: Path) -> None:
    np.save(tmp_path / "x0.npy", np.full((1, 3), 0.5, dtype=np.float32))
    text = """
properties:
  - {kind: robustness, input: x0.npy, eps: 0.1}
  - {kind: robustness, input: [0, 0, 0], eps: 0.1, label: 9}
"""
    doc = parse_spec(text, source="s.yaml", base_dir=tmp_path)
    net = mlp(3, 4)
    first = lower(doc.properties[0], net, tmp_path)[0]
    np.testing.assert_allclose(first.problem.box.center, [0.5, 0.5, 0.5], atol=1e-7)
    with pytest.raises(SpecError, match=r"^s\.yaml: properties\[1\]\.label: 9"):
        lower_document(doc, net)
    doc2 = parse_spec(text.replace("label: 9", "label: 1"), source="s.yaml", base_dir=tmp_path)
    names = [lw.problem.name for lw in lower_document(doc2, net)]
    assert names == ["robustness[0]", "robustness[1]"]


def test_missing_npy_at_lowering_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="input: cannot read"):
        lower(LocalRobustness(input="gone.npy", eps=0.1), mlp(3, 4), tmp_path)


# -- the quick-start model and its example specs ----------------------------------------

def quickstart_network() -> Network:
    from certify.io.onnx import load_onnx

    return load_onnx(QUICKSTART / "digits_mlp.onnx")


def test_quickstart_files_are_small_and_consistent() -> None:
    assert (QUICKSTART / "digits_mlp.onnx").stat().st_size < 100_000
    x0 = np.load(QUICKSTART / "digit_0.npy")
    assert x0.shape == (64,) and x0.min() >= 0 and x0.max() <= 1
    import onnxruntime

    session = onnxruntime.InferenceSession(str(QUICKSTART / "digits_mlp.onnx"))
    (y,) = session.run(None, {session.get_inputs()[0].name: x0[None].astype(np.float32)})
    assert int(np.argmax(y)) == 0


def pgd(net: Network, lowered_box: tuple[np.ndarray, np.ndarray], label: int, steps: int = 100) -> np.ndarray:
    lo, hi = (torch.tensor(b, dtype=torch.float32) for b in lowered_box)
    x = (lo + hi) / 2
    for _ in range(steps):
        x.requires_grad_(True)
        y = net(x[None])[0]
        loss = torch.cat([y[:label], y[label + 1:]]).max() - y[label]
        (grad,) = torch.autograd.grad(loss, x)
        x = torch.max(torch.min(x.detach() + (hi - lo) / 20 * grad.sign(), hi), lo)
    return x.numpy()


def test_quickstart_large_eps_spec_is_violated_in_onnxruntime() -> None:
    import onnxruntime

    from certify.io.yaml import load_spec

    net = quickstart_network()
    doc = load_spec(ROOT / "specs" / "robustness_digits_violated.yaml")
    (lowered,) = lower_document(doc, net)
    problem = lowered.problem
    x = pgd(net, (problem.box.lower, problem.box.upper), int(problem.meta["label"]))
    assert problem.box.contains(x.astype(np.float64), tol=1e-6)
    session = onnxruntime.InferenceSession(str(QUICKSTART / "digits_mlp.onnx"))
    (y,) = session.run(None, {session.get_inputs()[0].name: x[None]})
    assert problem.violation(y) <= 0
    assert lowered.lift(x)["predicted"] != 0


def test_quickstart_small_eps_spec_survives_attack() -> None:
    from certify.io.yaml import load_spec

    net = quickstart_network()
    (lowered,) = lower_document(load_spec(ROOT / "specs" / "robustness_digits.yaml"), net)
    problem = lowered.problem
    x = pgd(net, (problem.box.lower, problem.box.upper), int(problem.meta["label"]))
    assert problem.violation(predict(net, x)) > 0
