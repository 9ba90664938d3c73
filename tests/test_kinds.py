"""Every property kind on small models whose truth is known by construction.

Each kind is decided by certify (``certify.api.check`` with one engine); a VIOLATED answer's
counterexample is lifted back to the user's terms and re-checked against the *original*
property in plain onnxruntime.  Hypothesis tests check that points of the original property
map into the lowered box and back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from certify.api import CheckOptions, check, load_instances
from certify.augment import BallOracle, MappedOracle
from certify.errors import ShapeMismatch, SpecError
from certify.io.onnx import load_onnx
from certify.io.yaml import load_spec
from certify.lower import SIGMA_PIECES, blur, gaussian_kernel, lower, lower_document
from certify.spec import BlurTolerance, BrightnessContrast, Monotonicity
from certify.verdict import Status
from tests.zoo import export

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------
# Models built in the tests
# ---------------------------------------------------------------------------------------

def linear_layer(weight: np.ndarray, bias: np.ndarray) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return layer


def monotone_net(seed: int = 0) -> nn.Sequential:
    """4 -> 8 -> 2; y[0] is non-decreasing in x[0] and x[1] (non-negative weights on every path)."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(8, 4))
    w1[:, :2] = np.abs(w1[:, :2])
    w2 = rng.normal(size=(2, 8))
    w2[0] = np.abs(w2[0])
    return nn.Sequential(linear_layer(w1, rng.normal(size=8) * 0.1), nn.ReLU(),
                         linear_layer(w2, rng.normal(size=2) * 0.1))


def bumped_net() -> nn.Sequential:
    """4 -> 3 -> 2; y[0] = relu(x0 + x1 + 2) - 4 relu(x0 - 0.8): drops as x0 grows past 0.8."""
    w1 = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]], dtype=float)
    w2 = np.array([[1, -4, 0], [0, 0, 1]], dtype=float)
    return nn.Sequential(linear_layer(w1, np.array([2.0, -0.8, 0.0])), nn.ReLU(),
                         linear_layer(w2, np.zeros(2)))


def pixel_net(pixel: int, threshold: float, n: int = 36) -> nn.Sequential:
    """Flat image of ``n`` pixels -> [x[pixel], threshold]: class 0 iff the pixel beats the threshold."""
    w = np.zeros((2, n))
    w[0, pixel] = 1.0
    return nn.Sequential(nn.Flatten(), linear_layer(w, np.array([0.0, threshold])))


def mass_net(threshold: float, n: int = 36) -> nn.Sequential:
    """[mean(x), threshold], through a ReLU (the mean of non-negative images is non-negative)."""
    w = np.full((1, n), 1.0 / n)
    return nn.Sequential(nn.Flatten(), linear_layer(w, np.zeros(1)), nn.ReLU(),
                         linear_layer(np.array([[1.0], [0.0]]), np.array([0.0, threshold])))


def save(module: nn.Module, shape: tuple[int, ...], tmp_path: Path, name: str = "model.onnx") -> Path:
    return export(module, shape, tmp_path / name)


def ort(path: Path, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    (y,) = session.run(None, {inp.name: np.asarray(x, dtype=np.float32).reshape(inp.shape)})
    return y.reshape(-1).astype(np.float64)


def spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def decide(model: Path, spec_path: Path, engine: str, timeout: float = 20.0):  # noqa: ANN201
    return check(model, spec_path, CheckOptions(engine=engine, timeout=timeout, device="cpu"))


# ---------------------------------------------------------------------------------------
# monotonicity, pairwise
# ---------------------------------------------------------------------------------------

PAIRWISE = """
kind: monotonicity
features: [0, 1]
lower: 0.0
upper: 1.0
output: 0
tol: 1.0e-3
"""


def test_pairwise_monotone_net_holds(tmp_path: Path) -> None:
    model = save(monotone_net(), (4,), tmp_path)
    result = decide(model, spec(tmp_path, PAIRWISE), "milp")
    assert result.status is Status.HOLDS


def test_pairwise_bump_is_violated_and_the_pair_really_violates(tmp_path: Path) -> None:
    model = save(bumped_net(), (4,), tmp_path)
    result = decide(model, spec(tmp_path, PAIRWISE), "fuzz")
    assert result.status is Status.VIOLATED
    assert result.counterexample is not None and result.counterexample.replayed
    lifted = result.lifted
    assert lifted is not None
    x, xp = lifted["x"], lifted["x_prime"]
    assert np.all(x >= -1e-7) and np.all(xp <= 1 + 1e-7) and np.all(xp >= x)
    assert np.array_equal(x[2:], xp[2:])  # only the chosen features differ
    assert ort(model, x)[0] - ort(model, xp)[0] > 1e-3  # the score really drops


def test_pairwise_decreasing_direction(tmp_path: Path) -> None:
    model = save(monotone_net(), (4,), tmp_path)
    text = PAIRWISE.replace("tol: 1.0e-3", "tol: 1.0e-3\ndirection: decreasing")
    result = decide(model, spec(tmp_path, text), "fuzz")
    assert result.status is Status.VIOLATED  # an increasing score is not decreasing
    lifted = result.lifted
    assert lifted is not None
    assert ort(model, lifted["x_prime"])[0] - ort(model, lifted["x"])[0] > 1e-3


pairs = st.tuples(
    st.lists(st.floats(0, 1), min_size=4, max_size=4),
    st.lists(st.floats(0, 1), min_size=2, max_size=2),
    st.sampled_from([None, 0.25]),
)


@settings(max_examples=60, deadline=None)
@given(data=pairs)
def test_pairwise_points_map_into_the_box_and_back(data: tuple[list[float], list[float], float | None]) -> None:
    xs, fractions, max_step = data
    net_module = monotone_net(1)
    network = _ir(net_module, (4,))
    prop = Monotonicity(features=[0, 1], lower=0.0, upper=1.0, output=0, max_step=max_step)
    (lw,) = lower(prop, network)
    x = np.asarray(xs)
    xp = x.copy()
    for k, f in enumerate([0, 1]):  # any x' >= x on the features, within the box and the step
        room = 1.0 - x[f] if max_step is None else min(1.0 - x[f], max_step)
        xp[f] = x[f] + fractions[k] * room
    z = np.concatenate([x, xp[[0, 1]] - x[[0, 1]]])
    box = lw.problem.box
    assert box.contains(z, tol=1e-12)
    assert isinstance(lw.oracle, MappedOracle)
    back_x, back_xp = lw.oracle.inputs(z)
    np.testing.assert_allclose(back_x, x, atol=1e-12)
    np.testing.assert_allclose(back_xp, xp, atol=1e-12)
    # the product network computes [f(x), f(x')] (checked against the module itself)
    with torch.no_grad():
        got = lw.problem.network(torch.tensor(z, dtype=torch.float32)[None]).reshape(-1).numpy()
        want = torch.cat([net_module(torch.tensor(x, dtype=torch.float32)[None]),
                          net_module(torch.tensor(xp, dtype=torch.float32)[None])], 1).reshape(-1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    # and every z of the box is a pair of the property
    corner = np.where(np.asarray(fractions + [0.0] * 4)[:6] > 0.5, box.upper, box.lower)
    cx, cxp = lw.oracle.inputs(corner)
    assert np.all(cxp >= cx) and np.all(cxp <= 1) and np.array_equal(cx[2:], cxp[2:])
    if max_step is not None:
        assert np.all(cxp - cx <= max_step + 1e-12)


def _ir(module: nn.Module, shape: tuple[int, ...]):  # noqa: ANN202
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return load_onnx(export(module, shape, Path(d) / "m.onnx"))


def test_feature_out_of_range_names_the_field(tmp_path: Path) -> None:
    network = _ir(monotone_net(), (4,))
    with pytest.raises(SpecError, match=r"features: \[7\] out of range"):
        lower(Monotonicity(features=[0, 7], lower=0.0, upper=1.0, output=0), network)
    with pytest.raises(SpecError, match=r"output: \[5\] not an output"):
        lower(Monotonicity(features=[0], lower=0.0, upper=1.0, output=5), network)
    with pytest.raises(ShapeMismatch, match="lower: spec gives 3 input values"):
        lower(Monotonicity(features=[0], lower=[0, 0, 0], upper=1.0, output=0), network)


# ---------------------------------------------------------------------------------------
# monotonicity, along a path
# ---------------------------------------------------------------------------------------

PATH = """
kind: monotonicity
form: path
background: [0.2, 0.2, 0.5, 0.5]
target: [1.0, 1.0, 0.5, 0.5]
alpha: [0.0, 1.0]
output: 0
"""


def test_path_monotone_net_holds(tmp_path: Path) -> None:
    model = save(monotone_net(), (4,), tmp_path)
    assert decide(model, spec(tmp_path, PATH), "bab").status is Status.HOLDS


def test_path_bump_is_violated_in_onnxruntime(tmp_path: Path) -> None:
    model = save(bumped_net(), (4,), tmp_path)
    # y0(a) = 2.4 + 1.6 a - 4 relu(0.8 a - 0.6): 3.6 at a = 0.75, then down to 3.2 at a = 1
    result = decide(model, spec(tmp_path, PATH + "reference: 0.75\n"), "fuzz")
    assert result.status is Status.VIOLATED
    lifted = result.lifted
    assert lifted is not None and 0.0 <= lifted["alpha"] <= 1.0
    expected_image = np.array([0.2, 0.2, 0.5, 0.5]) + lifted["alpha"] * np.array([0.8, 0.8, 0, 0])
    np.testing.assert_allclose(lifted["image"], expected_image, atol=1e-6)
    assert ort(model, lifted["reference_image"])[0] - ort(model, lifted["image"])[0] > 1e-4


@settings(max_examples=40, deadline=None)
@given(a=st.floats(0.25, 0.75))
def test_path_points_map_into_the_box_and_back(a: float) -> None:
    network = _ir(monotone_net(), (4,))
    bg, tg = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.9, 0.6, 0.3, 0.4])
    prop = Monotonicity(form="path", background=bg.tolist(), target=tg.tolist(), alpha=(0.25, 0.75),
                        reference=0.5, output=0)
    (lw,) = lower(prop, network)
    assert lw.problem.box.contains(np.array([a]))
    image, reference = lw.oracle.inputs(np.array([a]))  # type: ignore[union-attr]
    np.testing.assert_allclose(image, bg + a * (tg - bg), atol=1e-12)
    np.testing.assert_allclose(reference, bg + 0.5 * (tg - bg), atol=1e-12)


# ---------------------------------------------------------------------------------------
# blur_tolerance
# ---------------------------------------------------------------------------------------

def dot_image(value: float = 1.0) -> np.ndarray:
    image = np.zeros((6, 6))
    image[2:4, 2:4] = value
    return image


def test_blur_preserving_the_mass_holds(tmp_path: Path) -> None:
    """The mass of an image away from the border is unchanged by any normalized 3x3 blur."""
    model = save(mass_net(threshold=0.1), (1, 6, 6), tmp_path)
    np.save(tmp_path / "dot.npy", dot_image()[None])
    text = ("kind: blur_tolerance\ninput: dot.npy\nlabel: 0\n"
            "kernel: {type: gaussian, sigma: [0.5, 1.0], steps: 3, size: 3}\nstrength: [0.0, 1.0]\n")
    result = decide(model, spec(tmp_path, text), "crown")
    assert result.status is Status.HOLDS
    # one exact problem per sampled sigma, plus the weight boxes covering the whole sigma range
    assert len(result.instances) == 3 + SIGMA_PIECES


def test_blur_that_dims_the_detected_pixel_is_violated(tmp_path: Path) -> None:
    model = save(pixel_net(pixel=2 * 6 + 2, threshold=0.6), (1, 6, 6), tmp_path)
    np.save(tmp_path / "dot.npy", dot_image()[None])
    text = "kind: blur_tolerance\ninput: dot.npy\nkernel: {type: gaussian, sigma: 1.5}\nstrength: [0.0, 1.0]\n"
    result = decide(model, spec(tmp_path, text), "fuzz")
    assert result.status is Status.VIOLATED
    lifted = result.lifted
    assert lifted is not None and lifted["kernel"] == "sigma=1.5"
    t = lifted["strength"]
    # the blurred image, recomputed independently with torch (replicate padding)
    k = torch.tensor(gaussian_kernel(1.5), dtype=torch.float64)[None, None]
    pad = k.shape[-1] // 2
    sharp = torch.tensor(dot_image())[None, None]
    blurred = F.conv2d(F.pad(sharp, (pad,) * 4, mode="replicate"), k)[0].numpy()
    expected = (1 - t) * dot_image()[None] + t * blurred
    np.testing.assert_allclose(lifted["blurred"], expected, atol=1e-6)
    y = ort(model, expected)
    assert y[1] >= y[0]  # the class really changed


def test_blur_envelope(tmp_path: Path) -> None:
    model = save(pixel_net(pixel=14, threshold=0.6), (1, 6, 6), tmp_path)
    image = dot_image()[None]
    np.save(tmp_path / "dot.npy", image)
    for low, expected in ((0.7, Status.HOLDS), (0.4, Status.VIOLATED)):
        lower_env = image.copy()
        lower_env[0, 2:4, 2:4] = low
        np.savez(tmp_path / "env.npz", lower=lower_env, upper=image)
        text = "kind: blur_tolerance\ninput: dot.npy\nenvelope: {lower: env.npz:lower, upper: env.npz:upper}\n"
        engine = "crown" if expected is Status.HOLDS else "fuzz"
        result = decide(model, spec(tmp_path, text), engine)
        assert result.status is expected
        if expected is Status.VIOLATED:
            x = result.lifted["input"]  # type: ignore[index]
            assert np.all(x >= lower_env - 1e-7) and np.all(x <= image + 1e-7)
            y = ort(model, x)
            assert y[1] >= y[0]


@settings(max_examples=40, deadline=None)
@given(t=st.floats(0.0, 1.0), sigma=st.floats(0.3, 2.0))
def test_blur_points_map_into_the_box_and_back(t: float, sigma: float) -> None:
    network = _ir(mass_net(0.1), (1, 6, 6))
    image = np.random.default_rng(0).uniform(size=(1, 6, 6))
    prop = BlurTolerance(input=image.tolist(), kernel={"type": "gaussian", "sigma": sigma})
    (lw,) = lower(prop, network)
    assert lw.problem.box.contains(np.array([t]))
    (blurred,) = lw.oracle.inputs(np.array([t]))  # type: ignore[union-attr]
    np.testing.assert_allclose(blurred, (1 - t) * image + t * blur(image, gaussian_kernel(sigma)), atol=1e-12)
    with torch.no_grad():
        got = lw.problem.network(torch.tensor([[t]], dtype=torch.float32)).reshape(-1).numpy()
        want = network(torch.tensor(blurred, dtype=torch.float32)[None]).reshape(-1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_blur_needs_an_image_shape_for_flat_models() -> None:
    network = _ir(monotone_net(), (4,))
    prop = BlurTolerance(input=[0.0, 0.0, 0.0, 0.0], kernel={"type": "box", "size": 3})
    with pytest.raises(ShapeMismatch, match="image_shape"):
        lower(prop, network)
    (lw,) = lower(prop.model_copy(update={"image_shape": [2, 2]}), network)
    assert lw.problem.box.shape == (1,)


# ---------------------------------------------------------------------------------------
# brightness_contrast
# ---------------------------------------------------------------------------------------

def test_brightness_contrast_truth_from_the_mean(tmp_path: Path) -> None:
    """class 0 iff mean(c x + b) > 0.3; mean(x) = 0.6: min over c in [0.8, 1.2] is 0.48 + b."""
    model = save(mass_net(threshold=0.3), (1, 6, 6), tmp_path)
    np.save(tmp_path / "x.npy", np.full((1, 6, 6), 0.6))
    holds = "kind: brightness_contrast\ninput: x.npy\ncontrast: [0.8, 1.2]\nbrightness: [-0.1, 0.1]\nclip: [0, 1]\n"
    assert decide(model, spec(tmp_path, holds), "crown").status is Status.HOLDS
    violated = holds.replace("[-0.1, 0.1]", "[-0.4, 0.0]")
    result = decide(model, spec(tmp_path, violated, "v.yaml"), "fuzz")
    assert result.status is Status.VIOLATED
    lifted = result.lifted
    assert lifted is not None
    c, b = lifted["contrast"], lifted["brightness"]
    assert 0.8 - 1e-6 <= c <= 1.2 + 1e-6 and -0.4 - 1e-6 <= b <= 1e-6
    image = np.clip(c * np.full((1, 6, 6), 0.6) + b, 0, 1)
    np.testing.assert_allclose(lifted["image"], image, atol=1e-6)
    y = ort(model, image)
    assert y[1] >= y[0]


@settings(max_examples=40, deadline=None)
@given(c=st.floats(0.5, 1.5), b=st.floats(-0.5, 0.5))
def test_brightness_points_map_into_the_box_and_back(c: float, b: float) -> None:
    network = _ir(mass_net(0.3), (1, 6, 6))
    x = np.random.default_rng(1).uniform(size=(1, 6, 6))
    prop = BrightnessContrast(input=x.tolist(), contrast=(0.5, 1.5), brightness=(-0.5, 0.5), clip=(0.0, 1.0))
    (lw,) = lower(prop, network)
    z = np.array([c, b])
    assert lw.problem.box.contains(z)
    (image,) = lw.oracle.inputs(z)  # type: ignore[union-attr]
    np.testing.assert_allclose(image, np.clip(c * x + b, 0, 1), atol=1e-12)
    with torch.no_grad():
        got = lw.problem.network(torch.tensor(z, dtype=torch.float32)[None]).reshape(-1).numpy()
        want = network(torch.tensor(image, dtype=torch.float32)[None]).reshape(-1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


# ---------------------------------------------------------------------------------------
# output_range
# ---------------------------------------------------------------------------------------

def test_output_range_of_a_linear_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    w, bias = rng.normal(size=(2, 4)), rng.normal(size=2)
    model = save(nn.Sequential(linear_layer(w, bias)), (4,), tmp_path)
    lo = (np.minimum(w, 0).sum(1) + bias)[0]  # exact range of y0 over [0, 1]^4
    hi = (np.maximum(w, 0).sum(1) + bias)[0]
    ok = f"kind: output_range\nlower: 0.0\nupper: 1.0\noutputs: [{{output: 0, min: {lo - 0.01}, max: {hi + 0.01}}}]\n"
    assert decide(model, spec(tmp_path, ok), "crown").status is Status.HOLDS
    bad = ok.replace(f"max: {hi + 0.01}", f"max: {hi - 0.05}")
    result = decide(model, spec(tmp_path, bad, "bad.yaml"), "fuzz")
    assert result.status is Status.VIOLATED
    x = result.lifted["input"]  # type: ignore[index]
    assert np.all((x >= 0) & (x <= 1)) and ort(model, x)[0] >= hi - 0.05


# ---------------------------------------------------------------------------------------
# robustness extensions
# ---------------------------------------------------------------------------------------

def sum_net() -> nn.Sequential:
    """2 -> [x0 + x1, 0.3]: class 0 iff x0 + x1 > 0.3."""
    return nn.Sequential(linear_layer(np.array([[1.0, 1.0], [0.0, 0.0]]), np.array([0.0, 0.3])))


def test_l2_counts_only_counterexamples_inside_the_ball(tmp_path: Path) -> None:
    """Around (0.5, 0.5), the L2 ball of radius 0.45 is safe (min 1 - 0.45 sqrt 2 = 0.36 > 0.3)
    but its enclosing box is not (min 0.1): the box proof fails and the box's counterexamples
    never replay, so the answer is UNKNOWN, never VIOLATED."""
    model = save(sum_net(), (2,), tmp_path)
    text = "kind: robustness\ninput: [0.5, 0.5]\neps: 0.45\nnorm: l2\n"
    result = decide(model, spec(tmp_path, text), "fuzz", timeout=3.0)
    assert result.status is Status.UNKNOWN
    (inst,) = load_instances(model, tmp_path / "spec.yaml")
    assert isinstance(inst.oracle, BallOracle)
    assert np.all(np.isnan(inst.oracle.run(np.array([0.05, 0.05]))))  # a box corner, outside the ball
    np.testing.assert_allclose(inst.oracle.run(np.array([0.3, 0.5])), ort(model, [0.3, 0.5]))
    # a ball small enough that the box is safe too: proved
    assert decide(model, spec(tmp_path, text.replace("0.45", "0.3")), "crown").status is Status.HOLDS


def test_per_feature_eps_samples_and_files(tmp_path: Path) -> None:
    network = _ir(sum_net(), (2,))
    np.savez(tmp_path / "xs.npz", batch=np.array([[0.5, 0.5], [0.8, 0.1], [0.4, 0.9]]))
    (tmp_path / "img.pgm").write_bytes(b"P5\n# two pixels\n2 1\n255\n" + bytes([255, 51]))
    text = """
properties:
  - {kind: robustness, samples: xs.npz:batch, eps: [0.1, 0.0]}
  - {kind: robustness, samples: [img.pgm, [0.3, 0.3]], eps: 0.05, clip: [0, 1]}
"""
    lowered = lower_document(load_spec(spec(tmp_path, text)), network)
    assert [lw.problem.name for lw in lowered] == [
        "robustness[0]#0", "robustness[0]#1", "robustness[0]#2", "robustness[1]#0", "robustness[1]#1"]
    first = lowered[0].problem.box
    np.testing.assert_allclose(first.lower, [0.4, 0.5])
    np.testing.assert_allclose(first.upper, [0.6, 0.5])
    np.testing.assert_allclose(lowered[3].problem.box.center, [0.975, 0.2])  # 255/255 clipped, 51/255
    with pytest.raises(ShapeMismatch, match="eps: spec gives 3 input radii"):
        lower_document(load_spec(spec(tmp_path, "kind: robustness\ninput: [0, 0]\neps: [1, 1, 1]\n", "e.yaml")),
                       network)


# ---------------------------------------------------------------------------------------
# vnnlib
# ---------------------------------------------------------------------------------------

def test_vnnlib_kind_bundles_files(tmp_path: Path) -> None:
    model = save(sum_net(), (2,), tmp_path)
    for name, lo in (("a", 0.4), ("b", 0.0)):
        (tmp_path / f"{name}.vnnlib").write_text(
            "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
            f"(assert (>= X_0 {lo}))\n(assert (<= X_0 1.0))\n(assert (>= X_1 0.0))\n(assert (<= X_1 1.0))\n"
            "(assert (<= Y_0 Y_1))\n")
    holds = spec(tmp_path, "kind: vnnlib\npath: a.vnnlib\n")
    assert decide(model, holds, "crown").status is Status.HOLDS
    both = spec(tmp_path, "properties:\n  - {kind: vnnlib, path: b.vnnlib}\n  - {kind: vnnlib, path: a.vnnlib}\n",
                "both.yaml")
    result = decide(model, both, "fuzz")
    assert result.status is Status.VIOLATED
    y = ort(model, result.counterexample.x)  # type: ignore[union-attr]
    assert y[0] <= y[1]
