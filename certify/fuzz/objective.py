"""Boxes and unsafe sets of many problems as padded tensors, and the per-lane margin.

For problem ``p`` with disjuncts ``k`` of rows ``A_k y <= b_k`` the margin of an output ``y`` is
``min_k max_i (A_k y - b_k + tol)_i`` with ``tol = FALSIFY_TOLERANCE * (1 + |b|)`` per row: it is
negative only when ``y`` lies strictly inside some disjunct by that tolerance, so float32
rounding (or onnxruntime's different summation order) cannot flip a hit.  Minimising it
attacks the best disjunct of every lane.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from certify.problem import Box, Problem

#: A candidate counts only if its margin is below ``-FALSIFY_TOLERANCE * (1 + |b|)``.
FALSIFY_TOLERANCE = 1e-6


def float32_box(box: Box) -> tuple[np.ndarray, np.ndarray]:
    """The largest float32 box inside ``box`` (bounds rounded inward), flattened: ``[n]`` each.

    Clamping float32 values to these bounds keeps them inside the float64 box exactly.
    A box thinner than one float32 ulp collapses to its (rounded) lower bound.
    """
    lo64 = box.lower.astype(np.float64).reshape(-1)
    hi64 = box.upper.astype(np.float64).reshape(-1)
    lo = lo64.astype(np.float32)
    hi = hi64.astype(np.float32)
    lo = np.where(lo.astype(np.float64) < lo64, np.nextafter(lo, np.float32(np.inf)), lo)
    hi = np.where(hi.astype(np.float64) > hi64, np.nextafter(hi, np.float32(-np.inf)), hi)
    return lo, np.maximum(hi, lo)


#: The margin multiplies the outputs by every distinct row once (``[B, n_out] @ [n_out, R]``) and
#: gathers each lane's rows when there are at most this many distinct rows per lane slot;
#: otherwise it gathers each lane's coefficients and multiplies them lane by lane.
SHARED_ROWS_FACTOR = 16


@dataclass(frozen=True, slots=True)
class Objective:
    """``P`` problems in a padded ``[K, D]`` layout: at most ``K`` disjuncts of at most ``D`` rows.

    ``lower``, ``upper``: ``[P, n]`` (float32-inward box); ``rows``: ``[R, n_out]``, the distinct
    coefficient rows of all problems; ``row``: ``[P, K * D]`` (long) each slot's index into
    ``rows``; ``b``: ``[P, K * D]`` (tolerance folded in: ``b - tol``).  A padding slot of a
    disjunct has ``b = +inf`` (value ``-inf``, never its max); every slot of a padding disjunct
    has ``b = -inf`` (value ``+inf``, never the min).
    """

    lower: torch.Tensor
    upper: torch.Tensor
    rows: torch.Tensor
    row: torch.Tensor
    b: torch.Tensor
    K: int
    D: int

    @staticmethod
    def of(problems: Sequence[Problem], dtype: torch.dtype, device: torch.device) -> Objective:
        n_out = problems[0].network.output_size
        K = max(len(p.unsafe) for p in problems)
        D = max(hs.A.shape[0] for p in problems for hs in p.unsafe)
        P = len(problems)
        coef = np.zeros((P, K, D, n_out))
        b = np.full((P, K, D), -math.inf)
        lows, highs = [], []
        for i, p in enumerate(problems):
            lo, hi = float32_box(p.box)
            lows.append(lo)
            highs.append(hi)
            for k, hs in enumerate(p.unsafe):
                rows = hs.A.shape[0]
                coef[i, k, :rows] = hs.A
                b[i, k, :rows] = hs.b - FALSIFY_TOLERANCE * (1 + np.abs(hs.b))
                b[i, k, rows:] = math.inf
        distinct, index = np.unique(coef.reshape(-1, n_out), axis=0, return_inverse=True)
        t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
        return Objective(t(np.stack(lows)), t(np.stack(highs)), t(distinct),
                         torch.as_tensor(index.reshape(P, K * D), device=device), t(b.reshape(P, K * D)), K, D)


@dataclass(slots=True)
class LaneObjective:
    """The objective slots of each lane's problem, gathered once per (re)assignment.

    ``lower``, ``upper``: ``[B, n]``; ``row``, ``b``: ``[B, K * D]``; ``rows``, ``K``, ``D`` as in
    :class:`Objective` (shared).
    """

    lower: torch.Tensor
    upper: torch.Tensor
    row: torch.Tensor
    b: torch.Tensor
    rows: torch.Tensor
    K: int
    D: int

    @staticmethod
    def gather(obj: Objective, pid: torch.Tensor) -> LaneObjective:
        return LaneObjective(obj.lower[pid], obj.upper[pid], obj.row[pid], obj.b[pid], obj.rows, obj.K, obj.D)

    def assign(self, lanes: torch.Tensor, obj: Objective, pid: torch.Tensor) -> None:
        """Point ``lanes`` at problems ``pid`` (both ``[R]``)."""
        self.lower[lanes] = obj.lower[pid]
        self.upper[lanes] = obj.upper[pid]
        self.row[lanes] = obj.row[pid]
        self.b[lanes] = obj.b[pid]

    def margin(self, y: torch.Tensor) -> torch.Tensor:
        """Violation margin per lane for outputs ``y: [B, n_out]`` -> ``[B]`` (< 0: a hit);
        differentiable."""
        return self._reduce(self._values(y))[0]

    def margin_and_slope(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The margin per lane ``[B]`` and its gradient with respect to ``y``: ``[B, n_out]``.

        The margin is a min of maxes of linear rows, so its gradient is the deciding row's
        coefficients (one of them on ties, where it is a subgradient).  Returning it lets the
        fuzzer back-propagate from ``y`` directly, without an autograd graph through the margin
        (its backward cost about a tenth of a pass on ACAS Xu).
        """
        m, deciding = self._reduce(self._values(y))
        return m, self.rows.index_select(0, self.row.gather(1, deciding.unsqueeze(1)).squeeze(1))

    def _values(self, y: torch.Tensor) -> torch.Tensor:
        """``C_s . y - b_s`` for each lane's slots: ``[B, K * D]``."""
        if self.rows.shape[0] <= SHARED_ROWS_FACTOR * self.row.shape[1]:
            return (y @ self.rows.T).gather(1, self.row) - self.b
        return (self.rows[self.row] * y.unsqueeze(1)).sum(dim=-1) - self.b

    def _reduce(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``min_k max_d values_{k, d}`` per lane and the slot that decides it."""
        K, D = self.K, self.D
        if K == 1:
            return values.max(dim=-1)
        if D == 1:
            return values.min(dim=-1)
        per_disjunct, best = values.view(-1, K, D).max(dim=-1)  # [B, K]
        m, k = per_disjunct.min(dim=-1)
        return m, k * D + best.gather(1, k.unsqueeze(1)).squeeze(1)
