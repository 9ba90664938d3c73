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


@dataclass(frozen=True, slots=True)
class Objective:
    """``P`` problems padded to ``S`` rows in ``K`` disjuncts, on one device.

    ``lower``, ``upper``: ``[P, n]`` (float32-inward box); ``C``: ``[P, S, n_out]``;
    ``b``: ``[P, S]`` (tolerance folded in: ``b - tol``); ``mask``: ``[P, K, S]`` additive
    (0 where row ``s`` belongs to disjunct ``k``, ``-inf`` elsewhere); ``valid``: ``[P, K]``.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    C: torch.Tensor
    b: torch.Tensor
    mask: torch.Tensor
    valid: torch.Tensor

    @staticmethod
    def of(problems: Sequence[Problem], dtype: torch.dtype, device: torch.device) -> Objective:
        n_out = problems[0].network.output_size
        S = max(sum(hs.A.shape[0] for hs in p.unsafe) for p in problems)
        K = max(len(p.unsafe) for p in problems)
        P = len(problems)
        C = np.zeros((P, S, n_out))
        b = np.full((P, S), math.inf)  # padding rows: C y - b = -inf never decides a max
        mask = np.full((P, K, S), -math.inf)
        valid = np.zeros((P, K), dtype=bool)
        lows, highs = [], []
        for i, p in enumerate(problems):
            lo, hi = float32_box(p.box)
            lows.append(lo)
            highs.append(hi)
            row = 0
            for k, hs in enumerate(p.unsafe):
                rows = hs.A.shape[0]
                C[i, row:row + rows] = hs.A
                b[i, row:row + rows] = hs.b - FALSIFY_TOLERANCE * (1 + np.abs(hs.b))
                mask[i, k, row:row + rows] = 0.0
                valid[i, k] = True
                row += rows
        t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
        return Objective(t(np.stack(lows)), t(np.stack(highs)), t(C), t(b), t(mask),
                         torch.as_tensor(valid, device=device))


@dataclass(slots=True)
class LaneObjective:
    """The objective rows of each lane's problem, gathered once per (re)assignment.

    ``lower``, ``upper``: ``[B, n]``; ``C``: ``[B, S, n_out]``; ``b``: ``[B, S]``;
    ``mask``: ``[B, K, S]``; ``valid``: ``[B, K]``.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    C: torch.Tensor
    b: torch.Tensor
    mask: torch.Tensor
    valid: torch.Tensor

    @staticmethod
    def gather(obj: Objective, pid: torch.Tensor) -> LaneObjective:
        return LaneObjective(obj.lower[pid], obj.upper[pid], obj.C[pid], obj.b[pid], obj.mask[pid],
                             obj.valid[pid])

    def assign(self, lanes: torch.Tensor, obj: Objective, pid: torch.Tensor) -> None:
        """Point ``lanes`` at problems ``pid`` (both ``[R]``)."""
        self.lower[lanes] = obj.lower[pid]
        self.upper[lanes] = obj.upper[pid]
        self.C[lanes] = obj.C[pid]
        self.b[lanes] = obj.b[pid]
        self.mask[lanes] = obj.mask[pid]
        self.valid[lanes] = obj.valid[pid]

    def margin(self, y: torch.Tensor) -> torch.Tensor:
        """Violation margin per lane for outputs ``y: [B, n_out]`` -> ``[B]`` (< 0: a hit)."""
        rows = (self.C * y.unsqueeze(1)).sum(dim=-1) - self.b  # [B, S] (faster than a bmm of tiny matrices)
        if self.mask.shape[1] == 1:  # one disjunct (padding rows are -inf: their b is +inf)
            return rows.amax(dim=-1)
        disjunct = (rows.unsqueeze(1) + self.mask).amax(dim=-1)  # [B, K]
        disjunct = torch.where(self.valid, disjunct, torch.full_like(disjunct, math.inf))
        return disjunct.amin(dim=-1)
