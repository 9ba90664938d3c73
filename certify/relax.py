"""Linear relaxations of the elementwise nonlinearities, written once, used by every engine.

For pre-activation bounds ``l <= x <= u`` a relaxation gives two lines that sandwich the
activation on ``[l, u]``::

    lower_slope * x + lower_bias  <=  f(x)  <=  upper_slope * x + upper_bias

CROWN and alpha-CROWN use them in the backward pass, the LP engines as constraints (for a
convex ``f`` on the interval the LP may add tangents; the two lines here are always sound).

``RELAXATIONS[op](l, u, attrs)`` returns a :class:`LinearRelaxation` of tensors shaped like
``l`` (``attrs``: the node's attributes, e.g. leaky ReLU's ``alpha``).  ReLU's lower slope is
the free parameter alpha-CROWN optimizes (:func:`relu_relaxation`).  An intercept may be
infinite (``1/x`` on an interval around 0): the relaxation then says nothing there.

Besides the elementwise table: :func:`bilinear_planes` (McCormick's planes for ``x * y``) and
:func:`softmax_bounds` (elementwise bounds of a softmax, its relaxation by constant lines).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from certify.network import Op


@dataclass(frozen=True, slots=True)
class LinearRelaxation:
    lower_slope: torch.Tensor
    lower_bias: torch.Tensor
    upper_slope: torch.Tensor
    upper_bias: torch.Tensor


def relu_upper(l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The chord of an unstable ReLU (exact for stable ones): slope, bias."""
    active = l >= 0
    unstable = (l < 0) & (u > 0)
    denom = torch.where(unstable, u - l, torch.ones_like(u))
    slope = torch.where(unstable, u / denom, active.to(u.dtype))
    bias = torch.where(unstable, -l * u / denom, torch.zeros_like(u))
    return slope, bias


def relu_default_alpha(l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """CROWN's adaptive lower slope: 1 where u >= -l, else 0."""
    return (u >= -l).to(u.dtype)


def relu_relaxation(l: torch.Tensor, u: torch.Tensor, alpha: torch.Tensor | None = None) -> LinearRelaxation:
    """ReLU: chord above; below, ``alpha * x`` with ``alpha in [0, 1]`` for unstable neurons.

    Stable neurons get the exact lines (identity for ``l >= 0``, zero for ``u <= 0``).
    """
    upper_slope, upper_bias = relu_upper(l, u)
    active = l >= 0
    unstable = (l < 0) & (u > 0)
    if alpha is None:
        alpha = relu_default_alpha(l, u)
    lower_slope = torch.where(unstable, alpha.clamp(0.0, 1.0), active.to(u.dtype))
    return LinearRelaxation(lower_slope, torch.zeros_like(l), upper_slope, upper_bias)


# -- S-shaped activations (sigmoid, tanh): convex on x < 0, concave on x > 0 ---------------

@dataclass(frozen=True, slots=True)
class SShape:
    f: Callable[[torch.Tensor], torch.Tensor]
    df: Callable[[torch.Tensor], torch.Tensor]


def _dsigmoid(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1 - s)


def _dtanh(x: torch.Tensor) -> torch.Tensor:
    return 1 - torch.tanh(x) ** 2


SIGMOID = SShape(torch.sigmoid, _dsigmoid)
TANH = SShape(torch.tanh, _dtanh)

_BISECT_STEPS = 40
#: Outward slack added to the intercepts of S-shaped relaxations, absorbing rounding.
_SLACK = 1e-7


def _tangent_through(fn: SShape, anchor: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                     upper: bool) -> torch.Tensor:
    """A point ``d`` in ``[lo, hi]`` whose tangent slope, drawn through ``(anchor, f(anchor))``,
    stays on the correct side of ``f`` on the far side of the interval.

    For the upper line (anchor = l < 0 and d in [0, u]) the slope ``f'(d)`` must be at least the
    slope of the true tangent; ``f'`` decreases on ``[0, inf)``, so bisection keeps the left end.
    For the lower line (anchor = u > 0 and d in [l, 0]) ``f'`` increases on ``(-inf, 0]`` and the
    slope must again be at least the true one, so bisection keeps the right end.
    """
    fa = fn.f(anchor)
    for _ in range(_BISECT_STEPS):
        mid = (lo + hi) / 2
        # g > 0: the tangent at mid, extended to the anchor, passes above (anchor, f(anchor)).
        g = fn.f(mid) + fn.df(mid) * (anchor - mid) - fa
        if upper:  # the true tangent point d* has g = 0; g > 0 right of d*
            hi = torch.where(g > 0, mid, hi)
            lo = torch.where(g > 0, lo, mid)
        else:  # g < 0 left of d*
            lo = torch.where(g < 0, mid, lo)
            hi = torch.where(g < 0, hi, mid)
    return lo if upper else hi


def s_shaped_relaxation(fn: SShape, l: torch.Tensor, u: torch.Tensor) -> LinearRelaxation:
    """CROWN's relaxation of an S-shaped function on ``[l, u]``."""
    fl, fu = fn.f(l), fn.f(u)
    width = u - l
    tiny = width < 1e-9
    safe_width = torch.where(tiny, torch.ones_like(width), width)
    chord = torch.where(tiny, fn.df(l), (fu - fl) / safe_width)
    mid = (l + u) / 2
    tangent_slope = fn.df(mid)
    tangent_bias = fn.f(mid) - tangent_slope * mid

    convex = u <= 0
    concave = l >= 0
    mixed = ~(convex | concave)

    # Upper line.
    up_slope = torch.where(convex, chord, tangent_slope)
    up_bias = torch.where(convex, fl - chord * l, tangent_bias)
    # Lower line.
    lo_slope = torch.where(concave, chord, tangent_slope)
    lo_bias = torch.where(concave, fl - chord * l, tangent_bias)

    if bool(mixed.any()):
        zero = torch.zeros_like(l)
        # Upper: chord if it already lies above f (chord slope <= f'(u)), else a tangent from l.
        d_up = _tangent_through(fn, l, zero, torch.clamp(u, min=0.0), upper=True)
        s_up = fn.df(d_up)
        use_chord_up = chord <= fn.df(u)
        m_up_slope = torch.where(use_chord_up, chord, s_up)
        m_up_bias = fl - m_up_slope * l
        # Lower: chord if it lies below f (chord slope <= f'(l)), else a tangent from u.
        d_lo = _tangent_through(fn, u, torch.clamp(l, max=0.0), zero, upper=False)
        s_lo = fn.df(d_lo)
        use_chord_lo = chord <= fn.df(l)
        m_lo_slope = torch.where(use_chord_lo, chord, s_lo)
        m_lo_bias = fu - m_lo_slope * u
        up_slope = torch.where(mixed, m_up_slope, up_slope)
        up_bias = torch.where(mixed, m_up_bias, up_bias)
        lo_slope = torch.where(mixed, m_lo_slope, lo_slope)
        lo_bias = torch.where(mixed, m_lo_bias, lo_bias)

    # Degenerate intervals: the constant f(l) (up to slack) is exact.
    up_slope = torch.where(tiny, torch.zeros_like(l), up_slope)
    lo_slope = torch.where(tiny, torch.zeros_like(l), lo_slope)
    up_bias = torch.where(tiny, torch.maximum(fl, fu), up_bias)
    lo_bias = torch.where(tiny, torch.minimum(fl, fu), lo_bias)
    return LinearRelaxation(lo_slope, lo_bias - _SLACK, up_slope, up_bias + _SLACK)


# -- general smooth functions: chord and tangent lines, or bounded curvature ----------------

#: Outward slack (relative to the function's magnitude) absorbing float64 rounding of the
#: transcendental functions the relaxations below evaluate.
_REL_SLACK = 1e-12
#: Below this width an interval gets constant lines (chord slopes would cancel badly).
_TINY = 1e-9


def _constant(lo: torch.Tensor, hi: torch.Tensor) -> LinearRelaxation:
    zero = torch.zeros_like(lo)
    return LinearRelaxation(zero, lo, zero.clone(), hi)


def _slack(*values: torch.Tensor) -> torch.Tensor:
    total = 1.0 + sum(v.abs() for v in values)
    return _REL_SLACK * torch.nan_to_num(total, posinf=math.inf)


def curvature_relaxation(f: Callable[[torch.Tensor], torch.Tensor], df: Callable[[torch.Tensor], torch.Tensor],
                         l: torch.Tensor, u: torch.Tensor, curvature: tuple[torch.Tensor, torch.Tensor],
                         value_range: tuple[torch.Tensor, torch.Tensor]) -> LinearRelaxation:
    """Lines around a twice-differentiable ``f`` on ``[l, u]`` from bounds ``m <= f'' <= M`` there
    (``curvature``) and the exact range of ``f`` (``value_range``).

    Convex on the interval (``m >= 0``): the chord above, the tangent at the midpoint below;
    concave: the reverse; otherwise the chord shifted by ``max(0, M) w^2 / 8`` down and by
    ``max(0, -m) w^2 / 8`` up (``g = f - chord`` vanishes at both ends and ``g'' in [m, M]``).
    Where the constant range is narrower than that band, the constants are used instead.
    """
    m_lo, m_hi = curvature
    f_lo, f_hi = value_range
    fl, fu = f(l), f(u)
    width = u - l
    tiny = width < _TINY
    safe = torch.where(tiny, torch.ones_like(width), width)
    chord = (fu - fl) / safe
    chord_bias = fl - chord * l
    mid = (l + u) / 2
    t_slope = df(mid)
    t_bias = f(mid) - t_slope * mid
    convex, concave = m_lo >= 0, m_hi <= 0
    sag_down = m_hi.clamp(min=0) * width ** 2 / 8
    sag_up = (-m_lo).clamp(min=0) * width ** 2 / 8
    lo_slope = torch.where(convex, t_slope, chord)
    lo_bias = torch.where(convex, t_bias, torch.where(concave, chord_bias, chord_bias - sag_down))
    up_slope = torch.where(concave, t_slope, chord)
    up_bias = torch.where(concave, t_bias, torch.where(convex, chord_bias, chord_bias + sag_up))
    # Constant lines where the range is tighter than the band (or the interval is tiny).
    lines_band = torch.where(convex | concave, (fu - fl).abs() + sag_down + sag_up, sag_down + sag_up)
    flat = tiny | (f_hi - f_lo <= lines_band)
    zero = torch.zeros_like(l)
    lo_slope, lo_bias = torch.where(flat, zero, lo_slope), torch.where(flat, f_lo, lo_bias)
    up_slope, up_bias = torch.where(flat, zero, up_slope), torch.where(flat, f_hi, up_bias)
    # Rounding of f and of the intercepts (``slope * x`` for large ``|x|``), outward.
    slack = _slack(fl, fu, f_lo, f_hi) + 1e-15 * (l.abs() + u.abs()) * (chord.abs() + t_slope.abs())
    return LinearRelaxation(lo_slope, lo_bias - slack, up_slope, up_bias + slack)


def sin_range(l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact range of ``sin`` on ``[l, u]``: the end values, or +-1 where a crest (pi/2 +
    2k pi) or trough (-pi/2 + 2k pi) lies inside."""
    two_pi = 2 * math.pi

    def contains(point: float) -> torch.Tensor:  # some point + 2 k pi in [l, u]
        k = torch.ceil((l - point) / two_pi)
        return point + k * two_pi <= u

    sl, su = torch.sin(l), torch.sin(u)
    whole = (u - l) >= two_pi
    hi = torch.where(whole | contains(math.pi / 2), torch.ones_like(l), torch.maximum(sl, su))
    lo = torch.where(whole | contains(-math.pi / 2), -torch.ones_like(l), torch.minimum(sl, su))
    return lo, hi


def sin_relaxation(l: torch.Tensor, u: torch.Tensor, attrs: Mapping[str, Any] = {}) -> LinearRelaxation:
    lo, hi = sin_range(l, u)
    return curvature_relaxation(torch.sin, torch.cos, l, u, (-hi, -lo), (lo, hi))


def cos_relaxation(l: torch.Tensor, u: torch.Tensor, attrs: Mapping[str, Any] = {}) -> LinearRelaxation:
    lo, hi = cos_range(l, u)
    return curvature_relaxation(torch.cos, lambda x: -torch.sin(x), l, u, (-hi, -lo), (lo, hi))


def cos_range(l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact range of ``cos`` on ``[l, u]`` (crests at 2k pi, troughs at pi + 2k pi)."""
    two_pi = 2 * math.pi

    def contains(point: float) -> torch.Tensor:
        k = torch.ceil((l - point) / two_pi)
        return point + k * two_pi <= u

    cl, cu = torch.cos(l), torch.cos(u)
    whole = (u - l) >= two_pi
    hi = torch.where(whole | contains(0.0), torch.ones_like(l), torch.maximum(cl, cu))
    lo = torch.where(whole | contains(math.pi), -torch.ones_like(l), torch.minimum(cl, cu))
    return lo, hi


def exp_relaxation(l: torch.Tensor, u: torch.Tensor, attrs: Mapping[str, Any] = {}) -> LinearRelaxation:
    """``exp`` is convex: the chord above, a tangent below."""
    el, eu = torch.exp(l), torch.exp(u)
    return curvature_relaxation(torch.exp, torch.exp, l, u, (el, eu), (el, eu))


def pow_range(l: torch.Tensor, u: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact range of ``x ** p`` (integer ``p >= 1``) on ``[l, u]``."""
    pl, pu = l ** p, u ** p
    if p % 2:
        return pl, pu
    around_zero = (l < 0) & (u > 0)
    return torch.where(around_zero, torch.zeros_like(l), torch.minimum(pl, pu)), torch.maximum(pl, pu)


def pow_relaxation(l: torch.Tensor, u: torch.Tensor, attrs: Mapping[str, Any]) -> LinearRelaxation:
    """``x ** p`` for an integer ``p >= 2``: convex for even ``p`` (chord above, tangent below);
    for odd ``p`` the curvature ``p (p - 1) x ** (p - 2)`` changes sign at 0."""
    p = int(attrs["exponent"])
    c_lo, c_hi = pow_range(l, u, p - 2) if p > 2 else (torch.full_like(l, 2.0), torch.full_like(u, 2.0))
    curvature = (p * (p - 1) * c_lo, p * (p - 1) * c_hi) if p > 2 else (c_lo, c_hi)
    return curvature_relaxation(lambda x: x ** p, lambda x: p * x ** (p - 1), l, u, curvature, pow_range(l, u, p))


def reciprocal_range(l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The range of ``1 / x`` on ``[l, u]``: unbounded where the interval reaches 0."""
    pole = (l <= 0) & (u >= 0)
    inf = torch.full_like(l, math.inf)
    return torch.where(pole, -inf, 1 / u), torch.where(pole, inf, 1 / l)


def reciprocal_relaxation(l: torch.Tensor, u: torch.Tensor, attrs: Mapping[str, Any] = {}) -> LinearRelaxation:
    """``1 / x``: convex for ``x > 0``, concave for ``x < 0``; no lines across the pole."""
    lo, hi = reciprocal_range(l, u)
    pole = (l <= 0) & (u >= 0)
    sl = torch.where(pole, -torch.ones_like(l), l)  # any non-zero stand-in keeps the maths finite
    su = torch.where(pole, torch.ones_like(u), u)
    curvature = (2 / su ** 3, 2 / sl ** 3)  # 2 / x^3 grows on either side of the pole
    r = curvature_relaxation(torch.reciprocal, lambda x: -1 / x ** 2, sl, su, curvature, (1 / su, 1 / sl))
    zero = torch.zeros_like(l)
    return LinearRelaxation(torch.where(pole, zero, r.lower_slope), torch.where(pole, lo, r.lower_bias),
                            torch.where(pole, zero, r.upper_slope), torch.where(pole, hi, r.upper_bias))


# -- piecewise: sign (a jump at 0), floor, leaky ReLU --------------------------------------

#: The sign relaxation draws its sloped lines only for intervals reaching at least this far from 0.
_SIGN_MIN_REACH = 1e-12


def sign_relaxation(l: torch.Tensor, u: torch.Tensor, attrs: Mapping[str, Any] = {}) -> LinearRelaxation:
    """``sign`` (-1, 0 at 0, 1).  On one side of 0 it is constant; across 0 each side gets either
    its constant (-1 or 1) or the line through the far corner and the jump: above,
    ``1 + 2 x / (-l)`` (through ``(l, -1)`` and ``(0, 1)``) when ``u < -l``; below,
    ``-1 + 2 x / u`` (through ``(0, -1)`` and ``(u, 1)``) when ``-l < u``, the choice with the
    smaller area between the line and the function."""
    lo, hi = torch.sign(l), torch.sign(u)
    mixed = (l < 0) & (u > 0)
    zero = torch.zeros_like(l)
    up_line = mixed & (u < -l) & (-l > _SIGN_MIN_REACH)
    lo_line = mixed & (-l < u) & (u > _SIGN_MIN_REACH)
    safe_l = torch.where(up_line, l, -torch.ones_like(l))
    safe_u = torch.where(lo_line, u, torch.ones_like(u))
    return LinearRelaxation(torch.where(lo_line, 2 / safe_u, zero), torch.where(lo_line, -torch.ones_like(l), lo),
                            torch.where(up_line, 2 / -safe_l, zero), torch.where(up_line, torch.ones_like(l), hi))


def floor_relaxation(l: torch.Tensor, u: torch.Tensor, attrs: Mapping[str, Any] = {}) -> LinearRelaxation:
    """``x - 1 < floor(x) <= x``; the constant where ``l`` and ``u`` share one floor."""
    fl, fu = torch.floor(l), torch.floor(u)
    same = fl == fu
    one, zero = torch.ones_like(l), torch.zeros_like(l)
    return LinearRelaxation(torch.where(same, zero, one), torch.where(same, fl, -one),
                            torch.where(same, zero, one), torch.where(same, fu, zero))


def leaky_relu_relaxation(l: torch.Tensor, u: torch.Tensor, attrs: Mapping[str, Any]) -> LinearRelaxation:
    """``x`` for ``x >= 0``, ``alpha x`` below.  Across 0 the chord lies on one side (above for
    ``alpha <= 1``, where the function is convex) and a line through 0 with a slope between
    ``alpha`` and 1 on the other (1 when ``u >= -l``, else ``alpha``: the smaller area)."""
    alpha = float(attrs["alpha"])
    active, inactive = l >= 0, u <= 0
    mixed = ~(active | inactive)
    denom = torch.where(mixed, u - l, torch.ones_like(u))
    chord = torch.where(mixed, (u - alpha * l) / denom, torch.ones_like(u))
    chord_bias = torch.where(mixed, u - chord * u, torch.zeros_like(u))
    through_zero = torch.where(u >= -l, torch.ones_like(u), torch.full_like(u, alpha))
    exact = torch.where(active, torch.ones_like(u), torch.full_like(u, alpha))
    zero = torch.zeros_like(u)
    line = torch.where(mixed, through_zero, exact)
    if alpha <= 1:  # convex: chord above
        return LinearRelaxation(line, zero, torch.where(mixed, chord, exact), chord_bias)
    return LinearRelaxation(torch.where(mixed, chord, exact), chord_bias, line, zero)


RELAXATIONS: dict[Op, Callable[[torch.Tensor, torch.Tensor, Mapping[str, Any]], LinearRelaxation]] = {
    Op.RELU: lambda l, u, attrs: relu_relaxation(l, u),
    Op.SIGMOID: lambda l, u, attrs: s_shaped_relaxation(SIGMOID, l, u),
    Op.TANH: lambda l, u, attrs: s_shaped_relaxation(TANH, l, u),
    Op.SIGN: sign_relaxation,
    Op.SIN: sin_relaxation,
    Op.COS: cos_relaxation,
    Op.FLOOR: floor_relaxation,
    Op.EXP: exp_relaxation,
    Op.RECIPROCAL: reciprocal_relaxation,
    Op.LEAKY_RELU: leaky_relu_relaxation,
    Op.POW: pow_relaxation,
}


def _increasing(f: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    return lambda l, u, attrs: (f(l), f(u))


def _leaky_relu_range(l: torch.Tensor, u: torch.Tensor, attrs: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    alpha = float(attrs["alpha"])

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, alpha * x)

    ends = torch.stack([f(l), f(u), torch.where((l < 0) & (u > 0), torch.zeros_like(l), f(l))])
    return ends.amin(0), ends.amax(0)


#: The exact range of each elementwise op on ``[l, u]`` (interval arithmetic's rule).
RANGES: dict[Op, Callable[[torch.Tensor, torch.Tensor, Mapping[str, Any]], tuple[torch.Tensor, torch.Tensor]]] = {
    Op.RELU: _increasing(torch.relu),
    Op.SIGMOID: _increasing(torch.sigmoid),
    Op.TANH: _increasing(torch.tanh),
    Op.SIGN: _increasing(torch.sign),
    Op.FLOOR: _increasing(torch.floor),
    Op.EXP: _increasing(torch.exp),
    Op.SIN: lambda l, u, attrs: sin_range(l, u),
    Op.COS: lambda l, u, attrs: cos_range(l, u),
    Op.POW: lambda l, u, attrs: pow_range(l, u, int(attrs["exponent"])),
    Op.RECIPROCAL: lambda l, u, attrs: reciprocal_range(l, u),
    Op.LEAKY_RELU: _leaky_relu_range,
}


def _around_zero(l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return (l < 0) & (u > 0)


#: Where an op's relaxation is exact whatever its bounds, tighter input bounds change nothing:
#: ``INEXACT[op](l, u)`` marks the neurons whose relaxation does depend on them (an op missing
#: here depends on them everywhere).  CROWN refines only those (ReLU: the unstable neurons).
INEXACT: dict[Op, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    Op.RELU: _around_zero,
    Op.LEAKY_RELU: _around_zero,
    Op.SIGN: _around_zero,
    Op.FLOOR: lambda l, u: torch.floor(l) != torch.floor(u),
}


# -- multivariate: the bilinear product and softmax ----------------------------------------

@dataclass(frozen=True, slots=True)
class Plane:
    """``a * x + b * y + c`` (tensors shaped like the product)."""

    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor


def bilinear_planes(lx: torch.Tensor, ux: torch.Tensor, ly: torch.Tensor, uy: torch.Tensor) -> tuple[Plane, Plane]:
    """McCormick's planes for ``x * y`` on the box ``[lx, ux] x [ly, uy]``: below,
    ``ly x + lx y - lx ly`` (``(x - lx)(y - ly) >= 0``); above, ``uy x + lx y - lx uy``
    (``(x - lx)(uy - y) >= 0``).  Exact on the box's edges through ``(lx, ly)``."""
    return Plane(ly, lx, -lx * ly), Plane(uy, lx, -lx * uy)


def product_range(lx: torch.Tensor, ux: torch.Tensor, ly: torch.Tensor, uy: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact range of ``x * y`` on the box: the extreme corner products."""
    corners = torch.stack([lx * ly, lx * uy, ux * ly, ux * uy])
    return corners.amin(0), corners.amax(0)


#: Outward slack on softmax bounds (float64 rounding of exp and the sums).
_SOFTMAX_SLACK = 1e-12


def softmax_bounds(l: torch.Tensor, u: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise bounds of ``softmax(x)`` along ``dim`` for ``l <= x <= u``: entry ``i`` is
    smallest with ``x_i = l_i`` and every other ``x_j = u_j`` (and largest the other way), so
    each bound is the ``i``-th entry of a softmax of ``u`` with entry ``i`` set to ``l_i``."""
    n = l.shape[dim]
    lm, um = l.movedim(dim, -1), u.movedim(dim, -1)
    eye = torch.eye(n, dtype=torch.bool, device=l.device)
    low_rows = torch.where(eye, lm.unsqueeze(-1), um.unsqueeze(-2))  # [..., i, j]: u_j, l_i on the diagonal
    high_rows = torch.where(eye, um.unsqueeze(-1), lm.unsqueeze(-2))
    lower = torch.softmax(low_rows, dim=-1).diagonal(dim1=-2, dim2=-1)
    upper = torch.softmax(high_rows, dim=-1).diagonal(dim1=-2, dim2=-1)
    lower = (lower - _SOFTMAX_SLACK).clamp(min=0.0)
    upper = (upper + _SOFTMAX_SLACK).clamp(max=1.0)
    return lower.movedim(-1, dim), upper.movedim(-1, dim)
