"""Every relaxation in RELAXATIONS sandwiches its function on its interval."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from certify.network import Op
from certify.relax import RELAXATIONS, relu_relaxation

FUNCS = {Op.RELU: torch.relu, Op.SIGMOID: torch.sigmoid, Op.TANH: torch.tanh}


@settings(max_examples=200, deadline=None)
@given(op=st.sampled_from(list(RELAXATIONS)), a=st.floats(-12, 12), b=st.floats(-12, 12))
def test_relaxation_sandwiches_function(op: Op, a: float, b: float) -> None:
    l, u = torch.tensor([min(a, b)], dtype=torch.float64), torch.tensor([max(a, b)], dtype=torch.float64)
    r = RELAXATIONS[op](l, u)
    xs = torch.linspace(float(l), float(u), 2001, dtype=torch.float64)
    fx = FUNCS[op](xs)
    assert torch.all(r.lower_slope * xs + r.lower_bias <= fx + 1e-12)
    assert torch.all(r.upper_slope * xs + r.upper_bias >= fx - 1e-12)


@settings(max_examples=100, deadline=None)
@given(a=st.floats(-5, 0.0, exclude_max=True), b=st.floats(0.0, 5, exclude_min=True), alpha=st.floats(0, 1))
def test_relu_lower_slope_is_any_alpha(a: float, b: float, alpha: float) -> None:
    l, u = torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)
    r = relu_relaxation(l, u, torch.tensor([alpha], dtype=torch.float64))
    xs = torch.linspace(a, b, 101, dtype=torch.float64)
    assert torch.all(r.lower_slope * xs + r.lower_bias <= torch.relu(xs) + 1e-12)
    assert float(r.lower_slope) == alpha
