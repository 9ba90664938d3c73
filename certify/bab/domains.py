"""Batches of branch-and-bound domains, and the pool of open ones.

A *domain* is a region of the input box: a sub-box (input splitting, :class:`BoxDomains`) or
the box plus ReLU split decisions (ReLU splitting, :class:`SplitDomains`).  A batch holds one
row per domain in every field (a frozen dataclass of tensors with the same first dimension);
:meth:`Batch.take` selects rows, :meth:`Batch.concat` joins batches.  The :class:`Pool` keeps
the open domains and hands out the most promising first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

__all__ = ["Batch", "BoxDomains", "Pool", "SplitDomains"]

B = TypeVar("B", bound="Batch")


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows of domains; subclasses add the tensor fields (all ``[N, ...]``), ``key`` (lower
    is more urgent: the parent's worst open margin), ``depth`` and ``node`` (the domain's node
    in the proof tree being recorded, :mod:`certify.bab.record`; 0 when none is) among them."""

    key: torch.Tensor  # [N]
    depth: torch.Tensor  # [N] long
    node: torch.Tensor  # [N] long

    def __len__(self) -> int:
        return int(self.key.shape[0])

    def take(self: B, index: torch.Tensor | slice) -> B:
        """The rows ``index`` (indices, a boolean mask or a slice)."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

    def concat(self: B, other: B) -> B:
        return dataclasses.replace(self, **{f.name: torch.cat([getattr(self, f.name), getattr(other, f.name)])
                                            for f in dataclasses.fields(self)})


@dataclass(frozen=True, slots=True)
class BoxDomains(Batch):
    """Sub-boxes ``lo <= x <= hi`` (flat input ``[N, n]``), the disjuncts still open in each
    (``[N, K]`` bool) and the intermediate bounds they inherit (``known: [N, 2, m]``)."""

    lo: torch.Tensor
    hi: torch.Tensor
    open: torch.Tensor
    known: torch.Tensor


@dataclass(frozen=True, slots=True)
class SplitDomains(Batch):
    """Split decisions ``splits: [N, total]`` (int8: +1 active, -1 inactive, 0 free) inside input
    box ``box: [N]``, the slopes and multipliers to warm-start from (``alpha, beta: [N, S,
    total]``), the open disjuncts ``[N, K]``, the pre-activation bounds ``lo, hi: [N, total]``
    and the ReLU layer of the newest split (``after: [N]``; layers after it get refined)."""

    splits: torch.Tensor
    box: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    open: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    after: torch.Tensor


class Pool(Generic[B]):
    """Open domains: best first (lowest ``key``) while at most half of ``cap`` are open, depth
    first (newest first) above, so the pool stops growing before it reaches the cap."""

    def __init__(self, domains: B, cap: int) -> None:
        self.domains = domains
        self.cap = cap

    def __len__(self) -> int:
        return len(self.domains)

    @property
    def crowded(self) -> bool:
        return len(self) > self.cap // 2

    def pop(self, size: int, shallow_first: bool = False) -> B:
        """Up to ``size`` domains: the most urgent (with ``shallow_first``, the shallowest, ties
        by urgency), or the newest when the pool is crowded."""
        n = len(self)
        size = min(size, n)
        if self.crowded:
            out, self.domains = self.domains.take(slice(n - size, n)), self.domains.take(slice(0, n - size))
            return out
        if shallow_first:
            order = torch.argsort(self.domains.key)
            idx = order[torch.argsort(self.domains.depth[order], stable=True)[:size]]
        else:
            idx = torch.topk(self.domains.key, size, largest=False).indices
        keep = torch.ones(n, dtype=torch.bool, device=self.domains.key.device)
        keep[idx] = False
        out, self.domains = self.domains.take(idx), self.domains.take(keep)
        return out

    def push(self, domains: B) -> None:
        self.domains = self.domains.concat(domains)

    def drop(self, keep: torch.Tensor) -> None:
        """Keep only the rows where ``keep`` is true."""
        self.domains = self.domains.take(keep)
