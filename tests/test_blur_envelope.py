"""The sigma-range lowering of blur_tolerance contains every member of the blur family."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from certify.lower import blur, gaussian_kernel, gaussian_weight_boxes, shifted_windows


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), s0=st.floats(0.3, 2.0), ds=st.floats(0.01, 1.5),
       t0=st.floats(0.0, 0.5), dt=st.floats(0.0, 0.5), pieces=st.integers(1, 6))
def test_every_sigma_and_strength_lies_in_some_weight_box(seed: int, s0: float, ds: float, t0: float,
                                                         dt: float, pieces: int) -> None:
    rng = np.random.default_rng(seed)
    s1 = s0 + ds
    size = 2 * int(np.ceil(3 * s1)) + 1
    boxes = gaussian_weight_boxes((s0, s1), size, (t0, t0 + dt), pieces)
    for s in np.concatenate([[s0, s1], rng.uniform(s0, s1, 12)]):
        w = gaussian_kernel(float(s), size).reshape(-1)
        for t in np.concatenate([[t0, t0 + dt], rng.uniform(t0, t0 + dt, 3)]):
            u = t * w
            assert any(np.all(u >= lo) and np.all(u <= hi) for lo, hi in boxes)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), sigma=st.floats(0.3, 2.0), t=st.floats(0.0, 1.0),
       border=st.sampled_from(["edge", "zero"]))
def test_the_linear_form_reproduces_the_blend(seed: int, sigma: float, t: float, border: str) -> None:
    """image + sum_k u_k (shift_k - image) with u = t K equals (1 - t) image + t blur(image, K)."""
    img = np.random.default_rng(seed).random((5, 6))
    size = 2 * int(np.ceil(3 * sigma)) + 1
    k = gaussian_kernel(sigma, size)
    windows = shifted_windows(img, size, border).reshape(size * size, -1)
    flat = img.reshape(-1)
    linear = flat + (t * k.reshape(-1)) @ (windows - flat[None])
    expected = ((1 - t) * img + t * blur(img, k, border)).reshape(-1)
    assert np.allclose(linear, expected, atol=1e-12)
