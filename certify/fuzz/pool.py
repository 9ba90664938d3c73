"""Per-problem seed pools and energy-based seed selection.

Each problem keeps its ``K`` best points so far (lowest margin), with the margin's gradient
there and how often each seed was picked.  A seed's energy falls with its rank in the pool and
with the times it was picked (``exp(-rank / (K / 4)) / sqrt(1 + picks)``), so the most
promising seeds are mutated most while stale ones give way.  Empty slots hold uniform samples
of the box with margin :data:`EMPTY` and are picked only while nothing better is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from certify.fuzz.rng import Rng

#: Margin of an empty (never evaluated) pool slot: finite, so it ranks before an ``inf`` candidate.
EMPTY = 3.0e38


@dataclass(slots=True)
class SeedPool:
    """``x``, ``grad``: ``[P, K, n]``; ``margin``: ``[P, K]``; ``picks``: ``[P, K]`` (long)."""

    x: torch.Tensor
    grad: torch.Tensor
    margin: torch.Tensor
    picks: torch.Tensor

    @staticmethod
    def start(lower: torch.Tensor, upper: torch.Tensor, size: int, rng: Rng) -> SeedPool:
        """Pools of ``size`` unevaluated uniform samples of each box (``lower``/``upper``: ``[P, n]``)."""
        P, n = lower.shape
        u = rng.uniform((P, size, n)).to(device=lower.device, dtype=lower.dtype)
        lo, hi = lower.unsqueeze(1), upper.unsqueeze(1)
        x = torch.maximum(torch.minimum(lo + (hi - lo) * u, hi), lo)
        return SeedPool(x, torch.zeros_like(x), torch.full((P, size), EMPTY, device=lower.device, dtype=lower.dtype),
                        torch.zeros((P, size), dtype=torch.long, device=lower.device))

    @property
    def size(self) -> int:
        return self.margin.shape[1]

    def energy(self) -> torch.Tensor:
        """Selection weights of every problem's seeds: ``[P, K]`` (rows sum > 0)."""
        m = self.margin
        rank = m.argsort(dim=1).argsort(dim=1).to(m.dtype)
        e = torch.exp(-rank / max(1.0, self.size / 4)) / torch.sqrt(1.0 + self.picks.to(m.dtype))
        evaluated = m < EMPTY
        any_evaluated = evaluated.any(dim=1, keepdim=True)
        return torch.where(evaluated | ~any_evaluated, e, torch.zeros_like(e))

    def pick(self, pid: torch.Tensor, rng: Rng) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pick one seed per entry of ``pid: [R]`` by energy; count the pick.

        Returns the seeds ``[R, n]``, their gradients ``[R, n]`` and how often each had been
        picked before ``[R]``.  The energies are computed once per problem (``[P, K]``, not per
        lane) and inverted as one flat CDF: row ``p``'s normalised CDF is offset by ``p``, so the
        draw ``p + u`` lands in row ``p``.
        """
        P, K = self.margin.shape
        cdf = self.energy().to(torch.float64).cumsum(dim=1)
        cdf = cdf / cdf[:, -1:]
        flat = (cdf + torch.arange(P, device=cdf.device, dtype=cdf.dtype).unsqueeze(1)).reshape(-1)
        u = rng.uniform(tuple(pid.shape)).to(device=cdf.device, dtype=cdf.dtype) + pid
        slot = (torch.searchsorted(flat, u, right=True) - pid * K).clamp_(0, K - 1)
        at = pid * K + slot  # flat slot indices: index_select is several times faster than [pid, slot]
        picks = self.picks.view(-1)
        before = picks.index_select(0, at)
        picks.add_(torch.bincount(at, minlength=P * K))
        n = self.x.shape[-1]
        return self.x.view(P * K, n).index_select(0, at), self.grad.view(P * K, n).index_select(0, at), before

    def insert(self, pid: torch.Tensor, x: torch.Tensor, grad: torch.Tensor, margin: torch.Tensor,
               rows: torch.Tensor | None = None) -> None:
        """Merge candidates (problem ``pid: [R]``, point ``x: [R, n]``, ``grad``, ``margin: [R]``)
        into the pools, keeping the ``K`` lowest margins of each problem.  With ``rows: [R]``,
        candidate ``i``'s point and gradient are row ``rows[i]`` of ``x`` and ``grad`` (only the
        rows that enter are gathered).

        Only the evicted slots are written (the pools are not kept in order; :meth:`energy`
        ranks them), so an insertion moves ``O(R n)`` data, not the whole ``[P, K, n]`` pool,
        and compares ``O(P K)`` margins after one sort of the candidates.
        """
        P, K, n = self.x.shape
        keep = (margin < self.margin.amax(dim=1)[pid]).nonzero().squeeze(1)  # can enter the pool
        if keep.numel() == 0:
            return
        if rows is None:
            rows = torch.arange(pid.numel(), device=pid.device)
        if keep.numel() < pid.numel():
            pid, margin, rows = pid[keep], margin[keep], rows[keep]
        # At most K candidates per problem can enter: each problem's best K, in a [P, K] table.
        order = torch.argsort(margin)
        order = order[torch.argsort(pid[order], stable=True)]  # by problem, best first
        by_problem = pid[order]
        counts = torch.bincount(by_problem, minlength=P)
        pos = torch.arange(order.numel(), device=pid.device) - (torch.cumsum(counts, 0) - counts)[by_problem]
        first = pos < K
        order, by_problem, pos = order[first], by_problem[first], pos[first]
        cand = torch.full((P, K), torch.inf, device=margin.device, dtype=margin.dtype)
        cand[by_problem, pos] = torch.nan_to_num(margin[order], nan=torch.inf)
        source = torch.full((P, K), -1, dtype=torch.long, device=pid.device)
        source[by_problem, pos] = order
        _, idx = torch.cat([self.margin, cand], dim=1).topk(K, dim=1, largest=False, sorted=False)  # [P, K]
        kept = torch.zeros(P, 2 * K, dtype=torch.bool, device=idx.device).scatter_(1, idx, True)
        # Row-major, the evicted slots and the entering candidates of each problem are equally
        # many, so the two lists pair up one to one.
        slot_p, slot_k = (~kept[:, :K]).nonzero(as_tuple=True)
        new = source[kept[:, K:]]
        if new.numel() == 0:
            return
        self.x[slot_p, slot_k] = x[rows[new]]
        self.grad[slot_p, slot_k] = grad[rows[new]]
        self.margin[slot_p, slot_k] = margin[new]
        self.picks[slot_p, slot_k] = 0
