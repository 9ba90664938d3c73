"""Linear relaxations of the elementwise nonlinearities, written once, used by every engine.

For pre-activation bounds ``l <= x <= u`` a relaxation gives two lines that sandwich the
activation on ``[l, u]``::

    lower_slope * x + lower_bias  <=  f(x)  <=  upper_slope * x + upper_bias

CROWN and alpha-CROWN use them in the backward pass, the LP engines as constraints (for a
convex ``f`` on the interval the LP may add tangents; the two lines here are always sound).

``RELAXATIONS[op](l, u)`` returns a :class:`LinearRelaxation` of tensors shaped like ``l``.
ReLU's lower slope is the free parameter alpha-CROWN optimizes (:func:`relu_relaxation`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


RELAXATIONS: dict[Op, Callable[[torch.Tensor, torch.Tensor], LinearRelaxation]] = {
    Op.RELU: relu_relaxation,
    Op.SIGMOID: lambda l, u: s_shaped_relaxation(SIGMOID, l, u),
    Op.TANH: lambda l, u: s_shaped_relaxation(TANH, l, u),
}
