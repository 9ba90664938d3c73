"""Outward-rounded float64 arithmetic: every function returns a bound that holds for the exact
real-number result of the operation on its (exact) float64 arguments.

A single operation rounded to nearest is within half an ulp of the exact result, so stepping at
least one ulp outward (:func:`up`, :func:`down`) encloses it, subnormals and overflow included.  Sums and
dot products of ``k`` terms, evaluated by numpy or BLAS in any order (FMA or not), satisfy
``|fl(a . b) - a . b| <= gamma_k (|a| . |b|) + k eta`` with ``gamma_k = k u / (1 - k u)``,
``u = 2^-53`` and ``eta = 2^-1074`` (products that underflow); :func:`mm` returns that bound,
itself computed and inflated upward.  :func:`fpu_ok` checks that the processor rounds to
nearest and keeps subnormals, which these bounds assume.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np

U = 2.0 ** -53
ETA = 2.0 ** -1074
STEP, TINY, BIG = 2.0 ** -51, 2.0 ** -1073, float(np.finfo(np.float64).max)  # see :func:`up`


def up(x: np.ndarray | float) -> np.ndarray:
    """A float above ``x`` by at least one ulp: above the exact result of the operation that
    gave ``x``.  ``x + (|x| 2^-51 + 2^-1073)``: the step is at least ``ulp(x)`` (``|x| 2^-51``
    is at least twice it for normal ``x``, ``2^-1073`` twice the subnormal spacing), so the
    rounded sum is at least the next float; ``-inf`` (an overflow below) becomes the lowest
    float, ``+inf`` stays."""
    return np.maximum(x + (np.minimum(np.abs(x), BIG) * STEP + TINY), -BIG)


def down(x: np.ndarray | float) -> np.ndarray:
    """A float below ``x`` by at least one ulp (see :func:`up`)."""
    return np.minimum(x - (np.minimum(np.abs(x), BIG) * STEP + TINY), BIG)


@lru_cache(maxsize=4096)
def gamma(k: int) -> float:
    """A float ``>= k u / (1 - k u) = k / (2^53 - k)``."""
    exact = Fraction(k, 2 ** 53 - k)
    g = float(exact)
    return g if Fraction(g) >= exact else float(up(g))


def _inflate(t: np.ndarray, k: int) -> np.ndarray:
    """An upper bound of the exact sum of ``k`` products ``>= 0`` whose float sum is ``t``:
    ``S <= (t + k eta) / (1 - gamma_k) <= (t + k eta)(1 + 2 gamma_k)``."""
    return up(up(t + k * ETA) * float(up(1.0 + 2.0 * gamma(k))))


def nonneg_mm_up(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Upper bound of the exact ``a @ b`` for ``a, b >= 0``."""
    return _inflate(a @ b, a.shape[-1])


def nonneg_dot_up(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Upper bound of the exact ``sum(a * b, -1)`` (broadcast) for ``a, b >= 0``."""
    return _inflate(np.einsum("...i,...i->...", a, b), np.broadcast_shapes(a.shape, b.shape)[-1])


def mm(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(c, e)``: ``c = fl(a @ b)`` and ``e`` with ``|c - a @ b| <= e`` (exact product)."""
    k = a.shape[-1]
    return a @ b, up(up(gamma(k) * nonneg_mm_up(np.abs(a), np.abs(b))) + k * ETA)


def dot(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mm` for ``sum(a * b, -1)`` (broadcast)."""
    k = np.broadcast_shapes(a.shape, b.shape)[-1]
    e = up(up(gamma(k) * nonneg_dot_up(np.abs(a), np.abs(b))) + k * ETA)
    return np.einsum("...i,...i->...", a, b), e


def sum_down(x: np.ndarray) -> np.ndarray:
    """Lower bound of the exact ``sum(x, -1)``."""
    k = x.shape[-1]
    return down(x.sum(-1) - up(gamma(k) * _inflate(np.abs(x).sum(-1), k)))


def midrad(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(c, r)`` with ``[lo, hi]`` inside ``[c - r, c + r]`` (exactly)."""
    c = 0.5 * lo + 0.5 * hi
    return c, np.maximum(up(hi - c), up(c - lo))


def lin_lower(lam: np.ndarray, c: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Lower bound of ``min lam . v`` over ``v`` in ``[c - r, c + r]`` (last axis, broadcast)."""
    s, e = dot(lam, c)
    return down(s - up(e + nonneg_dot_up(np.abs(lam), r)))


def imul(alo: np.ndarray, ahi: np.ndarray, blo: np.ndarray, bhi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An interval holding ``a b`` for every ``a`` in ``[alo, ahi]``, ``b`` in ``[blo, bhi]``."""
    p = np.stack(np.broadcast_arrays(alo * blo, alo * bhi, ahi * blo, ahi * bhi))
    return down(p.min(0)), up(p.max(0))


def fpu_ok() -> bool:
    """Round to nearest, subnormals kept (no flush to zero): what the error bounds assume."""
    one, tiny = np.ones(2), np.array([2.0 ** -54, -(2.0 ** -55)])
    sub = np.array([2.0 ** -1070]) * np.array([0.5])
    return bool(np.all(one + tiny == 1.0) and sub[0] == 2.0 ** -1071 and (np.array([ETA]) * 1.0)[0] > 0)


def nonneg_sum_up(x: np.ndarray) -> np.ndarray:
    """Upper bound of the exact ``sum(x, -1)`` for ``x >= 0``."""
    return _inflate(x.sum(-1), x.shape[-1])


def charge(p: np.ndarray, mag: np.ndarray) -> np.ndarray:
    """Bound on ``sum |p - exact| mag`` (last axis, broadcast) for ``p`` the result of one rounded
    product, quotient or sum each (``|p - exact| <= 2u|p| + eta``)."""
    return up(up(2 * U * nonneg_dot_up(np.abs(p), mag)) + up(ETA * nonneg_sum_up(mag)))
