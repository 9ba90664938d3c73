"""An exact referee for small ReLU nets that shares no code with certify's engines.

:func:`milp_minimum` is a big-M MILP over the exact network, solved by scipy's HiGHS interface:
with pre-activation bounds from interval arithmetic, every ReLU is encoded exactly by one
binary, so the minimum of a disjunct's worst row over the box is computed exactly (up to the
solver's tolerances, about 1e-7).  It imports nothing from ``certify``: the ``milp`` engine and
the conformance ground truth are judged by it, never by themselves.

Layers follow the ``x @ weight + bias`` convention: ``(weight [n_in, n_out], bias [n_out])``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SMOOTH", "grid_minimum", "milp_minimum"]


def milp_minimum(layers: list[tuple[np.ndarray, np.ndarray]], lo: np.ndarray, hi: np.ndarray,
                 A: np.ndarray, b: np.ndarray) -> float | None:
    """Exact ``min_x max_i (A_i net(x) - b_i)`` over the box ``[lo, hi]`` by a big-M MILP
    (None if HiGHS fails to solve it).

    ``layers``: ``(weight [n_in, n_out], bias [n_out])`` per linear layer, ReLU between them;
    ``lo, hi``: ``[n_in]``; ``A``: ``[rows, n_out]``; ``b``: ``[rows]``.
    """
    from scipy.optimize import Bounds as VarBounds
    from scipy.optimize import LinearConstraint, milp

    lo, hi = np.asarray(lo, dtype=np.float64).reshape(-1), np.asarray(hi, dtype=np.float64).reshape(-1)
    A, b = np.asarray(A, dtype=np.float64), np.asarray(b, dtype=np.float64).reshape(-1)
    # Variables: x, then per hidden layer (z, a, d), then the output y, then t.
    names: list[tuple[str, int]] = []
    var_lo: list[float] = []
    var_hi: list[float] = []
    integrality: list[int] = []

    def add(kind: str, count: int, lower: np.ndarray, upper: np.ndarray, integer: int = 0) -> int:
        start = len(names)
        names.extend((kind, i) for i in range(count))
        var_lo.extend(lower.tolist())
        var_hi.extend(upper.tolist())
        integrality.extend([integer] * count)
        return start

    x0 = add("x", lo.size, lo, hi)
    rows: list[tuple[dict[int, float], float, float]] = []
    prev, prev_lo, prev_hi = list(range(x0, x0 + lo.size)), lo, hi
    for k, (w, bias) in enumerate(layers):
        mid, rad = (prev_lo + prev_hi) / 2, (prev_hi - prev_lo) / 2
        z_lo = mid @ w + bias - rad @ np.abs(w) - 1e-6
        z_hi = mid @ w + bias + rad @ np.abs(w) + 1e-6
        z0 = add(f"z{k}", w.shape[1], z_lo, z_hi)
        for j in range(w.shape[1]):  # z_j = sum_i w_ij prev_i + bias_j
            coef = {prev[i]: w[i, j] for i in range(w.shape[0])}
            coef[z0 + j] = -1.0
            rows.append((coef, -bias[j], -bias[j]))
        if k == len(layers) - 1:
            out = list(range(z0, z0 + w.shape[1]))
            break
        a_hi = np.maximum(z_hi, 0)
        a0 = add(f"a{k}", w.shape[1], np.zeros(w.shape[1]), a_hi)
        d0 = add(f"d{k}", w.shape[1], np.zeros(w.shape[1]), np.ones(w.shape[1]), integer=1)
        for j in range(w.shape[1]):
            z, a, d = z0 + j, a0 + j, d0 + j
            rows.append(({a: 1.0, z: -1.0}, 0.0, np.inf))  # a >= z
            rows.append(({a: 1.0, z: -1.0, d: -z_lo[j]}, -np.inf, -z_lo[j]))  # a <= z - l (1 - d)
            rows.append(({a: 1.0, d: -max(z_hi[j], 0.0)}, -np.inf, 0.0))  # a <= u d
        prev, prev_lo, prev_hi = list(range(a0, a0 + w.shape[1])), np.maximum(z_lo, 0), a_hi
    t = add("t", 1, np.array([-1e6]), np.array([1e6]))
    for i in range(A.shape[0]):  # A_i y - b_i <= t
        coef = {out[j]: A[i, j] for j in range(A.shape[1])}
        coef[t] = -1.0
        rows.append((coef, -np.inf, b[i]))
    mat = np.zeros((len(rows), len(names)))
    for r, (coef, _, _) in enumerate(rows):
        for col, v in coef.items():
            mat[r, col] += v
    cost = np.zeros(len(names))
    cost[t] = 1.0
    for options in ({"mip_rel_gap": 1e-9}, {"mip_rel_gap": 1e-9, "presolve": False}):
        res = milp(cost, constraints=LinearConstraint(mat, [r[1] for r in rows], [r[2] for r in rows]),
                   integrality=np.array(integrality), bounds=VarBounds(var_lo, var_hi), options=options)
        if res.status == 0:
            return float(res.fun)
    return None  # HiGHS occasionally reports a solve error; callers skip or fail such problems


# ---------------------------------------------------------------------------------------
# Smooth nets on low-dimensional boxes: a dense grid plus interval refinement
# ---------------------------------------------------------------------------------------

#: The activations :func:`grid_minimum` knows, written here (numpy) independently of certify.
SMOOTH = {"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh, "relu": lambda z: np.maximum(z, 0)}


def _forward(layers: list[tuple[np.ndarray, np.ndarray]], acts: list[str], x: np.ndarray) -> np.ndarray:
    h = x
    for k, (w, b) in enumerate(layers):
        h = h @ w + b
        if k < len(layers) - 1:
            h = SMOOTH[acts[k]](h)
    return h


def _interval(layers: list[tuple[np.ndarray, np.ndarray]], acts: list[str], lo: np.ndarray,
              hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interval bounds of the outputs on boxes ``[N, n_in]`` (every activation is monotone)."""
    for k, (w, b) in enumerate(layers):
        c, r = (lo + hi) / 2, (hi - lo) / 2
        lo, hi = c @ w + b - r @ np.abs(w), c @ w + b + r @ np.abs(w)
        if k < len(layers) - 1:
            lo, hi = SMOOTH[acts[k]](lo), SMOOTH[acts[k]](hi)
    return lo, hi


def grid_minimum(layers: list[tuple[np.ndarray, np.ndarray]], acts: list[str], lo: np.ndarray, hi: np.ndarray,
                 A: np.ndarray, b: np.ndarray, cells: int = 96) -> tuple[float, float]:
    """``(lower, upper)`` around ``min_x max_i (A_i net(x) - b_i)`` over a 1- to 3-D box: the
    upper value from a dense grid of points (a point that reaches it exists), the lower one from
    interval arithmetic on every grid cell (no point goes below it).  When the lower value is
    above 0 the property holds; when the upper one is below 0 it is violated."""
    n = lo.size
    axes = [np.linspace(lo[i], hi[i], cells + 1) for i in range(n)]
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, n)
    upper = float(np.max(_forward(layers, acts, mesh) @ A.T - b, axis=1).min())
    starts = np.stack(np.meshgrid(*[a[:-1] for a in axes], indexing="ij"), -1).reshape(-1, n)
    ends = np.stack(np.meshgrid(*[a[1:] for a in axes], indexing="ij"), -1).reshape(-1, n)
    y_lo, y_hi = _interval(layers, acts, starts, ends)
    rows = np.maximum(A, 0) @ y_lo.T + np.minimum(A, 0) @ y_hi.T - b[:, None]  # [rows, cells]: lower bounds
    lower = float(rows.max(axis=0).min())
    return lower, upper
