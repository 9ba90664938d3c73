"""Rigorous bounds on a chain over a batch of regions, with fixed parameters.

A region is a box plus bounds ``[l, u]`` on every ReLU pre-activation that hold on it.
:func:`interval_step` is interval arithmetic.  :func:`backward` is CROWN's backward pass for
``lam . v_t + const``: at each layer the coefficients move one layer down in float64, and the
gap to the exact coefficients is bounded per entry and charged as ``error . max|v|`` (the
value's magnitude from the interval pass), so the bound holds for the exact weights and
relaxations.  :func:`relu_bounds` tightens a batch's pre-activation bounds layer by layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from certify.proof.check.chain import Chain, Dense, Layer, Relu, Scale
from certify.proof.check.forward import FORWARD_INPUTS, Forms, step
from certify.proof.check.rounding import (
    ETA,
    charge,
    dot,
    down,
    gamma,
    imul,
    lin_lower,
    midrad,
    mm,
    nonneg_dot_up,
    nonneg_mm_up,
    nonneg_sum_up,
    sum_down,
    up,
)

Values = list[tuple[np.ndarray, np.ndarray]]  # per value of the chain: lower, upper [B, n_t]
#: (ReLU k, its pre-activation bounds l, u [B, n]) -> lower slopes in [0, 1], [B, R or 1, n]
SlopeFn = Callable[[int, np.ndarray, np.ndarray], np.ndarray]
#: bytes of one [B, R, n] array a chunk may reach
CHUNK_BYTES = 64 << 20


def interval_step(layer: Layer, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The layer's output interval for inputs in ``[lo, hi]`` (``[B, n]``)."""
    if isinstance(layer, Dense):
        c, r = midrad(lo, hi)
        y, e = mm(c, layer.weight.T)
        rad = up(e + nonneg_mm_up(r, layer.abs_t))
        return down(down(y - rad) + layer.bias_lo), up(up(y + rad) + layer.bias_hi)
    if isinstance(layer, Scale):
        a, b = imul(lo, hi, layer.scale_lo, layer.scale_hi)
        return down(a + layer.bias_lo), up(b + layer.bias_hi)
    return np.maximum(lo, 0.0), np.maximum(hi, 0.0)


def adaptive(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """CROWN's adaptive lower slope: 1 where ``u >= -l``, else 0."""
    return (hi >= -lo).astype(np.float64)


def backward(chain: Chain, t0: int, lam: np.ndarray, const: np.ndarray, vals: Values, slope: SlopeFn,
             beta: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """A lower bound ``[B, R]`` of ``lam . v_t0 + const`` (``lam [B, R, n_t0]``, ``const [B, R]``
    a lower bound of the constant) over the regions whose values lie in ``vals``.  ``beta``
    (``[B, N]`` each): per pre-activation, ``sum beta side`` and a lower bound of ``beta side
    point``; the bound is then that of ``... - sum beta side (z - point)``."""
    err = np.zeros(const.shape)
    offsets = np.concatenate([[0], np.cumsum(chain.relu_sizes)]).astype(np.int64)
    relu_of = {i: k for k, i in enumerate(chain.relu_at)}
    for i in range(t0 - 1, -1, -1):
        layer, (lo, hi) = chain.layers[i], vals[i]
        mag = np.maximum(np.abs(lo), np.abs(hi))[:, None, :]
        if isinstance(layer, Dense):
            c, r = midrad(layer.bias_lo, layer.bias_hi)
            const = down(const + lin_lower(lam, c, r))
            k = lam.shape[-1]
            mu = (lam.reshape(-1, k) @ layer.weight).reshape(lam.shape[:-1] + (-1,))
            wmag = nonneg_mm_up(mag[:, 0, :], layer.abs_t)[:, None, :]  # >= |W| max|v|
            e = up(up(gamma(k) * nonneg_dot_up(np.abs(lam), wmag)) + up(k * ETA * nonneg_sum_up(mag)))
        elif isinstance(layer, Scale):
            c, r = midrad(layer.bias_lo, layer.bias_hi)
            const = down(const + lin_lower(lam, c, r))
            mu = lam * layer.scale_lo
            e = up(nonneg_dot_up(np.abs(lam), up(up(layer.scale_hi - layer.scale_lo) * mag)) + charge(mu, mag))
        else:
            k = relu_of[i]
            s, t = chord(lo, hi)
            inactive, active = hi <= 0, lo >= 0
            unstable = ~(inactive | active)  # NaN bounds too: their chord is NaN, so is the bound
            s = np.where(inactive, 0.0, np.where(active, 1.0, s))[:, None, :]
            a = slope(k, lo, hi)
            a = np.where(inactive[:, None, :], 0.0, np.where(active[:, None, :], 1.0, a))
            neg = np.minimum(lam, 0.0)
            mu = lam * np.where(lam < 0, s, a)
            ct, ct_err = dot(neg, np.where(unstable, t, 0.0)[:, None, :])
            const = down(const + down(ct - ct_err))
            e = charge(mu, mag)
            if beta is not None:
                sl = slice(offsets[k], offsets[k + 1])
                mu = mu - beta[0][:, None, sl]
                e = up(e + charge(mu, mag))
                const = down(const + sum_down(beta[1][:, sl])[:, None])
        err, lam = up(err + e), mu
    c, r = midrad(*vals[0])
    return down(down(const + lin_lower(lam, c[:, None, :], r[:, None, :])) - err)


def chord(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(s, t)`` with ``s z + t >= relu(z)`` on ``[lo, hi]`` where ``lo < 0 < hi``: the line is
    above relu at both ends (so on the interval), whatever the rounding of ``s``."""
    s = np.clip(np.where((lo < 0) & (hi > 0), hi / (hi - lo), 0.0), 0.0, 1.0)
    return s, np.maximum(up(-s * lo), up(hi * up(1.0 - s)))


@dataclass(frozen=True, eq=False)
class Slopes:
    """The certificate's slope blocks, for lookups (checked by the caller)."""

    rows_ptr: np.ndarray
    neurons: np.ndarray
    values_ptr: np.ndarray
    lower: np.ndarray  # float64
    upper: np.ndarray
    offsets: np.ndarray

    def listed(self, blocks: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """For blocks ``[B]`` (-1: none): the ``[B, n]`` mask of the neurons they list and each
        one's row in its block."""
        mask, rowpos = np.zeros((blocks.shape[0], n), dtype=bool), np.zeros((blocks.shape[0], n), dtype=np.int64)
        b = np.nonzero(blocks >= 0)[0]
        counts = self.rows_ptr[blocks[b] + 1] - self.rows_ptr[blocks[b]]
        rows = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        bb = np.repeat(b, counts)
        jj = self.neurons[np.repeat(self.rows_ptr[blocks[b]], counts) + rows]
        mask[bb, jj], rowpos[bb, jj] = True, rows
        return mask, rowpos

    def gather(self, blocks: np.ndarray, rowpos: np.ndarray, flag: np.ndarray, layer: int,
               ) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``rowpos [B, R]`` of ``blocks [B]`` where ``flag``: lower and upper ``[B, R, E]``."""
        e = int(self.offsets[layer])
        base = self.values_ptr[np.maximum(blocks, 0)][:, None] + rowpos * e
        idx = np.where(flag[..., None], base[..., None] + np.arange(e), 0)
        return self.lower[idx], self.upper[idx]


def relu_bounds(chain: Chain, xl: np.ndarray, xu: np.ndarray, lo: np.ndarray, hi: np.ndarray, start: np.ndarray,
                slopes: Slopes, blocks: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray, Values]:
    """Tighten ``lo, hi [B, N]`` (in place) on the boxes ``[xl, xu]``, as the search does.

    First pass: layers ``k >= start`` by CROWN with the slopes of ``blocks [B, L]`` where they
    list the neuron (a table inherited from an ancestor), adaptive elsewhere; where ``start`` is
    0, every layer by interval arithmetic and, on networks with at most ``FORWARD_INPUTS``
    inputs, forward linear bounds (:mod:`.forward`) too.  Nodes that ``own`` their blocks take
    adaptive slopes in the first pass; then a second pass bounds, layer by layer, the neurons
    their table lists with its slopes (alpha-CROWN after CROWN, in the search).  Returns the
    bounds and every value's interval (those of the pre-activations are the bounds)."""
    vals: Values = [(xl, xu)]
    k, full = 0, (start == 0)[:, None]
    first = np.where(own[:, None], -1, blocks)
    forms = Forms.identity(*xl.shape) if xl.shape[1] <= FORWARD_INPUTS and full.any() else None
    xmag = np.maximum(np.abs(xl), np.abs(xu))
    for i, layer in enumerate(chain.layers):
        if forms is not None and i > 0:  # forward linear bounds, where every layer is recomputed
            fl, fh = forms.bounds(xl, xu)
            vals[i] = (np.where(full, np.fmax(vals[i][0], fl), vals[i][0]),
                       np.where(full, np.fmin(vals[i][1], fh), vals[i][1]))
        if isinstance(layer, Relu):
            sl = slice(slopes.offsets[k], slopes.offsets[k + 1])
            vals[i] = (np.where(full, np.fmax(vals[i][0], lo[:, sl]), lo[:, sl]),
                       np.where(full, np.fmin(vals[i][1], hi[:, sl]), hi[:, sl]))
            _crown_layer(chain, vals, k, start, slopes, first, listed_only=False)
            lo[:, sl], hi[:, sl] = vals[i]
            k += 1
        if forms is not None:
            forms = step(layer, forms, *vals[i], xmag)
        vals.append(interval_step(layer, *vals[i]))
    rows = np.nonzero(own)[0]
    if rows.size:  # the second pass, on the nodes' own tables
        sub = [(a[rows], z[rows]) for a, z in vals]
        for k, i in enumerate(chain.relu_at):
            _crown_layer(chain, sub, k, np.zeros(rows.size, np.int64), slopes, blocks[rows], listed_only=True)
            sl = slice(slopes.offsets[k], slopes.offsets[k + 1])
            lo[rows, sl], hi[rows, sl] = sub[i]
        for i in chain.relu_at:
            vals[i][0][rows], vals[i][1][rows] = sub[i]
    return lo, hi, vals


def _crown_layer(chain: Chain, vals: Values, k: int, start: np.ndarray, slopes: Slopes, blocks: np.ndarray,
                 listed_only: bool) -> None:
    """CROWN bounds of the unstable pre-activations of ReLU ``k`` (of the layers ``>= start``),
    with the blocks' slopes where they list the neuron and adaptive slopes elsewhere (none
    elsewhere with ``listed_only``), intersected into ``vals``."""
    i = chain.relu_at[k]
    if k == 0 and sum(isinstance(layer, Dense) for layer in chain.layers[:i]) <= 1:
        return  # affine in the input through at most one dense map: intervals are exact already
    lo, hi = vals[i]
    unstable = (lo < 0) & (hi > 0)
    listed, rowpos = slopes.listed(blocks[:, k], lo.shape[1])
    b, j = np.nonzero(unstable & (start[:, None] <= k) & (listed if listed_only else True))
    if b.size == 0:
        return
    flag = listed[b, j]
    counts = np.bincount(b, minlength=lo.shape[0])
    rank = np.arange(b.size) - np.repeat(np.cumsum(counts) - counts, counts)
    r = int(counts.max())
    sel, flags = np.zeros((lo.shape[0], r), dtype=np.int64), np.zeros((lo.shape[0], r), dtype=bool)
    sel[b, rank], flags[b, rank] = j, flag
    width = max(chain.sizes[: i + 1]) + int(slopes.offsets[k])
    step = max(1, CHUNK_BYTES // (16 * r * width))
    new = np.empty((lo.shape[0], 2 * r))
    for c0 in range(0, lo.shape[0], step):
        cb = slice(c0, c0 + step)
        tables = slopes.gather(blocks[cb, k], rowpos[np.arange(lo.shape[0])[cb, None], sel[cb]], flags[cb], k) \
            if flags[cb].any() else None
        new[cb] = _bound_rows(chain, [(a[cb], z[cb]) for a, z in vals[: i + 1]], i, sel[cb], flags[cb], tables,
                              slopes.offsets)
    lo, hi = lo.copy(), hi.copy()
    np.fmax.at(lo, (b, j), new[b, rank])
    np.fmin.at(hi, (b, j), -new[b, r + rank])
    vals[i] = (lo, hi)


def _bound_rows(chain: Chain, vals: Values, i: int, sel: np.ndarray, flag: np.ndarray,
                tables: tuple[np.ndarray, np.ndarray] | None, offsets: np.ndarray) -> np.ndarray:
    """Lower bounds of ``z[sel]`` and of ``-z[sel]`` (``[B, 2R]``) for the pre-activation value
    ``i``, with the table's slopes where ``flag``."""
    prev = chain.layers[i - 1] if i > 0 else None
    bsz, r = sel.shape
    if isinstance(prev, Dense):  # start below the affine map: rows of W, exact
        w = prev.weight[sel]
        lam, const = np.concatenate([w, -w], 1), np.concatenate([prev.bias_lo[sel], -prev.bias_hi[sel]], 1)
        t0 = i - 1
    else:
        lam = np.zeros((bsz, 2 * r, chain.sizes[i]))
        bb, rr = np.indices(sel.shape)
        lam[bb, rr, sel], lam[bb, r + rr, sel] = 1.0, -1.0
        const, t0 = np.zeros((bsz, 2 * r)), i
    flag2 = np.concatenate([flag, flag], 1)[..., None]

    def slope(k: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        a = adaptive(lo, hi)[:, None, :]
        if tables is None:
            return a
        sl = slice(offsets[k], offsets[k + 1])
        return np.where(flag2, np.concatenate([tables[0][..., sl], tables[1][..., sl]], 1), a)

    return backward(chain, t0, lam, const, vals, slope)
