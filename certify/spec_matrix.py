"""The unsafe set as one stacked objective matrix, shared by the bound-based engines.

Every row ``i`` of every disjunct is stacked into ``C: [S, n_out]`` with right-hand side
``b: [S]``; ``group[i]`` names its disjunct.  A disjunct is infeasible on a region as soon as
one of its rows has ``min (C_i . y) - b_i > 0`` there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from certify.problem import Problem

#: A bound proves a row only with this margin: lower(C_i y) - b_i > PROOF_TOLERANCE * (1 + |b_i|).
#: It absorbs the gap between real-valued bounds and the float32 model onnxruntime runs.
PROOF_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class SpecMatrix:
    C: torch.Tensor  # [S, n_out]
    b: torch.Tensor  # [S]
    group: torch.Tensor  # [S] disjunct index per row (long)
    n_groups: int

    @staticmethod
    def of(problem: Problem, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> SpecMatrix:
        rows = np.concatenate([hs.A for hs in problem.unsafe], axis=0)
        rhs = np.concatenate([hs.b for hs in problem.unsafe], axis=0)
        group = np.concatenate([np.full(hs.A.shape[0], k) for k, hs in enumerate(problem.unsafe)])
        return SpecMatrix(
            torch.as_tensor(rows, dtype=dtype, device=device),
            torch.as_tensor(rhs, dtype=dtype, device=device),
            torch.as_tensor(group, dtype=torch.long, device=device),
            len(problem.unsafe),
        )

    def disjunct(self, k: int) -> SpecMatrix:
        """Disjunct ``k`` alone, as a one-disjunct matrix."""
        rows = self.group == k
        return SpecMatrix(self.C[rows], self.b[rows], torch.zeros_like(self.group[rows]), 1)

    def batch(self, bsz: int) -> torch.Tensor:
        """``C`` repeated for ``bsz`` domains: ``[B, S, n_out]``."""
        return self.C.unsqueeze(0).expand(bsz, -1, -1)

    def margins(self, lower: torch.Tensor) -> torch.Tensor:
        """Row margins ``lower - b - tol``: positive proves the row.  ``[B, S]``.  A bound that
        is not finite (an overflow, ``inf - inf``) proves nothing: its margin is ``-inf``."""
        m = lower - self.b - PROOF_TOLERANCE * (1 + self.b.abs())
        return torch.where(torch.isfinite(m), m, torch.full_like(m, -torch.inf))

    def disjunct_margins(self, lower: torch.Tensor) -> torch.Tensor:
        """Per disjunct, the best row margin: ``[B, K]``; > 0 means that disjunct is ruled out."""
        m = self.margins(lower)
        out = m.new_full((m.shape[0], self.n_groups), -torch.inf)
        return out.scatter_reduce(1, self.group.unsqueeze(0).expand_as(m), m, reduce="amax")

    def proved(self, lower: torch.Tensor) -> torch.Tensor:
        """Whether every disjunct is ruled out, per domain: ``[B]`` bool."""
        return (self.disjunct_margins(lower) > 0).all(dim=1)

    def violation(self, y: torch.Tensor) -> torch.Tensor:
        """``min_k max_{i in k} (C_i y - b_i)`` per output vector ``y: [N, n_out]``: ``[N]``;
        at most 0 exactly when ``y`` lies in the unsafe set (NaN outputs count as safe)."""
        rows = y.to(self.C.dtype) @ self.C.T - self.b  # [N, S]
        per = rows.new_full((rows.shape[0], self.n_groups), -torch.inf)
        per = per.scatter_reduce(1, self.group.unsqueeze(0).expand_as(rows), rows, reduce="amax")
        return torch.nan_to_num(per.min(dim=1).values, nan=torch.inf)
