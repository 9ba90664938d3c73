"""Every relaxation in RELAXATIONS sandwiches its function on its interval, every range in
RANGES contains it, and the multivariate ones (McCormick's planes, softmax bounds) hold on
sampled points."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from certify.network import Op
from certify.relax import RANGES, RELAXATIONS, bilinear_planes, product_range, relu_relaxation, softmax_bounds

#: Each elementwise op with the attribute variants to check, and its function.
CASES: dict[Op, list[dict]] = {
    Op.RELU: [{}], Op.SIGMOID: [{}], Op.TANH: [{}], Op.SIGN: [{}], Op.SIN: [{}], Op.COS: [{}], Op.FLOOR: [{}],
    Op.EXP: [{}], Op.RECIPROCAL: [{}], Op.LEAKY_RELU: [{"alpha": 0.01}, {"alpha": 0.5}, {"alpha": 3.0}],
    Op.POW: [{"exponent": 2}, {"exponent": 3}, {"exponent": 4}, {"exponent": 5}],
}


def function(op: Op, attrs: dict):
    """The op's meaning, written independently of certify.network."""
    return {
        Op.RELU: torch.relu, Op.SIGMOID: torch.sigmoid, Op.TANH: torch.tanh, Op.SIGN: torch.sign,
        Op.SIN: torch.sin, Op.COS: torch.cos, Op.FLOOR: torch.floor, Op.EXP: torch.exp,
        Op.RECIPROCAL: lambda x: 1.0 / x,
        Op.LEAKY_RELU: lambda x: torch.where(x >= 0, x, attrs.get("alpha", 0) * x),
        Op.POW: lambda x: x ** attrs.get("exponent", 1),
    }[op]


def test_every_elementwise_op_is_covered() -> None:
    assert set(CASES) == set(RELAXATIONS) == set(RANGES)


def _points(l: float, u: float) -> torch.Tensor:
    xs = torch.linspace(l, u, 2001, dtype=torch.float64)
    return torch.cat([xs, torch.tensor([0.0, l, u], dtype=torch.float64).clamp(l, u)])


@settings(max_examples=400, deadline=None)
@given(case=st.sampled_from([(op, attrs) for op, variants in CASES.items() for attrs in variants]),
       a=st.floats(-12, 12), b=st.floats(-12, 12), scale=st.sampled_from([1.0, 1e-3, 40.0]))
def test_relaxation_sandwiches_function_and_range_contains_it(case: tuple, a: float, b: float, scale: float) -> None:
    op, attrs = case
    lo_, hi_ = min(a, b) * scale, max(a, b) * scale
    if op is Op.EXP:
        lo_, hi_ = min(lo_, 60.0), min(hi_, 60.0)
    l, u = torch.tensor([lo_], dtype=torch.float64), torch.tensor([hi_], dtype=torch.float64)
    xs = _points(lo_, hi_)
    fx = function(op, attrs)(xs)
    finite = torch.isfinite(fx)
    r = RELAXATIONS[op](l, u, attrs)
    tol = 1e-9 * (1 + fx[finite].abs().max()) if bool(finite.any()) else 0.0
    with torch.no_grad():
        below = torch.where(r.lower_slope == 0, r.lower_bias, r.lower_slope * xs + r.lower_bias)
        above = torch.where(r.upper_slope == 0, r.upper_bias, r.upper_slope * xs + r.upper_bias)
    assert torch.all(below[finite] <= fx[finite] + tol), (op, attrs, lo_, hi_)
    assert torch.all(above[finite] >= fx[finite] - tol), (op, attrs, lo_, hi_)
    lo, hi = RANGES[op](l, u, attrs)
    assert torch.all(lo <= fx[finite] + tol) and torch.all(hi >= fx[finite] - tol), (op, attrs, lo_, hi_)


def test_reciprocal_across_its_pole_bounds_nothing() -> None:
    l, u = torch.tensor([-1.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    r = RELAXATIONS[Op.RECIPROCAL](l, u, {})
    assert float(r.lower_bias) == -math.inf and float(r.upper_bias) == math.inf
    lo, hi = RANGES[Op.RECIPROCAL](l, u, {})
    assert float(lo) == -math.inf and float(hi) == math.inf


def test_relaxations_are_exact_where_the_op_is_linear_or_constant() -> None:
    l, u = torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.9], dtype=torch.float64)
    sign = RELAXATIONS[Op.SIGN](l, u, {})
    assert float(sign.lower_bias) == float(sign.upper_bias) == 1.0 and float(sign.upper_slope) == 0.0
    floor = RELAXATIONS[Op.FLOOR](l, u, {})
    assert float(floor.lower_bias) == float(floor.upper_bias) == 0.0
    leaky = RELAXATIONS[Op.LEAKY_RELU](-u, -l, {"alpha": 0.1})
    assert float(leaky.lower_slope) == float(leaky.upper_slope) == 0.1


@settings(max_examples=200, deadline=None)
@given(box=st.lists(st.floats(-5, 5), min_size=4, max_size=4), seed=st.integers(0, 2**16))
def test_bilinear_planes_sandwich_the_product(box: list[float], seed: int) -> None:
    lx, ux = sorted(box[:2])
    ly, uy = sorted(box[2:])
    gen = torch.Generator().manual_seed(seed)
    x = lx + (ux - lx) * torch.rand(500, generator=gen, dtype=torch.float64)
    y = ly + (uy - ly) * torch.rand(500, generator=gen, dtype=torch.float64)
    t = [torch.tensor(v, dtype=torch.float64) for v in (lx, ux, ly, uy)]
    low, high = bilinear_planes(*t)
    assert torch.all(low.a * x + low.b * y + low.c <= x * y + 1e-9)
    assert torch.all(high.a * x + high.b * y + high.c >= x * y - 1e-9)
    lo, hi = product_range(*t)
    assert torch.all(lo <= x * y + 1e-9) and torch.all(hi >= x * y - 1e-9)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 7), seed=st.integers(0, 2**16), width=st.floats(0.0, 6.0))
def test_softmax_bounds_contain_every_sampled_softmax(n: int, seed: int, width: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    centre = 4 * torch.randn(2, n, generator=gen, dtype=torch.float64)
    l, u = centre - width * torch.rand(2, n, generator=gen, dtype=torch.float64), centre + width
    lo, hi = softmax_bounds(l, u, dim=1)
    x = l.unsqueeze(0) + (u - l).unsqueeze(0) * torch.rand(300, 2, n, generator=gen, dtype=torch.float64)
    s = torch.softmax(x, dim=2)
    assert torch.all(s >= lo - 1e-12) and torch.all(s <= hi + 1e-12)
    corner = torch.softmax(torch.where(torch.eye(n, dtype=torch.bool), l[0], u[0]), dim=1).diagonal()
    assert torch.allclose(lo[0], corner, atol=1e-10)  # the bound is attained: it is exact


@settings(max_examples=100, deadline=None)
@given(a=st.floats(-5, 0.0, exclude_max=True), b=st.floats(0.0, 5, exclude_min=True), alpha=st.floats(0, 1))
def test_relu_lower_slope_is_any_alpha(a: float, b: float, alpha: float) -> None:
    l, u = torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)
    r = relu_relaxation(l, u, torch.tensor([alpha], dtype=torch.float64))
    xs = torch.linspace(a, b, 101, dtype=torch.float64)
    assert torch.all(r.lower_slope * xs + r.lower_bias <= torch.relu(xs) + 1e-12)
    assert float(r.lower_slope) == alpha
