"""Forward linear bounds, rigorous: each value of the chain between two affine functions of the
input, ``Al x + cl <= v(x) <= Au x + cu`` on the box, pushed through the layers in float64 with
every rounding error charged to the constants (as ``error . max|x|``).  On networks with few
inputs they are often tighter than intervals, and the search uses them there too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from certify.proof.check.chain import Dense, Layer, Scale
from certify.proof.check.rounding import ETA, U, down, lin_lower, midrad, mm, nonneg_sum_up, up

__all__ = ["FORWARD_INPUTS", "Forms", "step"]

#: The search bounds with forward forms on networks with at most this many inputs.
FORWARD_INPUTS = 64


@dataclass(frozen=True, eq=False)
class Forms:
    """``al, au [B, d, n]`` (coefficient of input ``j`` in value ``i`` at ``[:, j, i]``) and the
    constants ``cl, cu [B, n]``; the forms bound the value exactly for the real numbers stored."""

    al: np.ndarray
    cl: np.ndarray
    au: np.ndarray
    cu: np.ndarray

    @staticmethod
    def identity(bsz: int, d: int) -> Forms:
        eye = np.broadcast_to(np.eye(d), (bsz, d, d)).copy()
        zero = np.zeros((bsz, d))
        return Forms(eye, zero, eye.copy(), zero.copy())

    def bounds(self, xl: np.ndarray, xu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds ``[B, n]`` of the value on the boxes ``[xl, xu]`` (``[B, d]``)."""
        c, r = midrad(xl, xu)
        c, r = c[:, None, :], r[:, None, :]
        low = down(lin_lower(np.swapaxes(self.al, 1, 2), c, r) + self.cl)
        high = up(-lin_lower(-np.swapaxes(self.au, 1, 2), c, r) + self.cu)
        return low, high


def step(layer: Layer, f: Forms, lo: np.ndarray, hi: np.ndarray, xmag: np.ndarray) -> Forms:
    """The forms of the layer's output, from its input's forms ``f`` and bounds ``lo, hi``
    (``[B, n]``); ``xmag [B, d]`` bounds ``|x|`` on the boxes."""
    if isinstance(layer, Dense):
        w = layer.weight.T  # [n, m]
        pos, neg = np.maximum(w, 0.0), np.minimum(w, 0.0)
        lower = np.concatenate([pos, neg], 0)
        upper = np.concatenate([neg, pos], 0)
        al, el = mm(np.concatenate([f.al, f.au], -1), lower)
        au, eu = mm(np.concatenate([f.al, f.au], -1), upper)
        cl, ecl = mm(np.concatenate([f.cl, f.cu], -1), lower)
        cu, ecu = mm(np.concatenate([f.cl, f.cu], -1), upper)
        cl = down(down(down(cl - ecl) - _charge(el, xmag)) + layer.bias_lo)
        cu = up(up(up(cu + ecu) + _charge(eu, xmag)) + layer.bias_hi)
        return Forms(al, cl, au, cu)
    if isinstance(layer, Scale):
        if not np.array_equal(layer.scale_lo, layer.scale_hi):  # an interval scale: intervals only
            return constant(lo, hi, layer, f.al.shape[1])
        s = layer.scale_lo
        pos, neg = np.maximum(s, 0.0), np.minimum(s, 0.0)
        al = f.al * pos + f.au * neg
        au = f.au * pos + f.al * neg
        el, eu = _product_error(al), _product_error(au)
        cl = down(down(down(down(f.cl * pos) + down(f.cu * neg)) - _charge(el, xmag)) + layer.bias_lo)
        cu = up(up(up(up(f.cu * pos) + up(f.cl * neg)) + _charge(eu, xmag)) + layer.bias_hi)
        return Forms(al, cl, au, cu)
    return _relu(f, lo, hi, xmag)


def _relu(f: Forms, lo: np.ndarray, hi: np.ndarray, xmag: np.ndarray) -> Forms:
    """Below: ``a z`` with CROWN's adaptive ``a`` in {0, 1} (exact); above: the chord
    ``s z + t`` on unstable neurons (``s`` in [0, 1]), ``z`` on active ones, 0 on inactive."""
    active, inactive = lo >= 0, hi <= 0
    unstable = ~(active | inactive)
    a = np.where(active, 1.0, np.where(unstable & (hi >= -lo), 1.0, 0.0))[:, None, :]
    s = np.where(unstable, np.clip(hi / np.where(unstable, hi - lo, 1.0), 0.0, 1.0), np.where(active, 1.0, 0.0))
    t = np.where(unstable, np.maximum(up(-s * lo), up(hi * up(1.0 - s))), 0.0)
    au = f.au * s[:, None, :]
    eu = _product_error(au)
    cu = up(up(up(f.cu * s) + t) + _charge(eu, xmag))
    return Forms(f.al * a, f.cl * a[:, 0, :], au, cu)


def constant(lo: np.ndarray, hi: np.ndarray, layer: Layer, d: int) -> Forms:
    """Forms that are the layer's output interval (no dependence on the input)."""
    from certify.proof.check.propagate import interval_step

    out_lo, out_hi = interval_step(layer, lo, hi)
    zero = np.zeros((lo.shape[0], d, out_lo.shape[1]))
    return Forms(zero, out_lo, zero.copy(), out_hi)


def _product_error(p: np.ndarray) -> np.ndarray:
    """Bound on the error of entries that are one rounded product each."""
    return up(up(2 * U * np.abs(p)) + ETA)


def _charge(e: np.ndarray, xmag: np.ndarray) -> np.ndarray:
    """``sum_j e[:, j, i] max|x_j|``, rounded up: ``[B, n]``."""
    return nonneg_sum_up(up(np.swapaxes(e, 1, 2) * xmag[:, None, :]))

