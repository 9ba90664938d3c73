"""Helpers shared by the two branch-and-bound modes: counters, verdicts, the domain cap and
the points a batch's linear bounds suggest as counterexamples.

A *domain* is a region of the input box (a sub-box, or the box plus ReLU split decisions).
Both modes keep a pool of open domains, bound a batch of them per tensor pass, try the points
the bounds suggest as counterexamples, drop the proved ones and split the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from certify.bab.options import BaBOptions
from certify.bab.record import Recorder
from certify.bounds import RELAXED_OPS, Bounds
from certify.network import Network
from certify.verdict import Counterexample, Status, Verdict

ENGINE = "bab"


@dataclass(slots=True)
class Stats:
    """Counters of one search (mutable, private to one ``check`` call)."""

    mode: str
    domains: int = 0  # domains bounded
    batches: int = 0
    max_depth: int = 0
    max_open: int = 0
    undecided: int = 0  # leaves that could be neither split further nor decided
    tightened: int = 0  # domains whose intermediate bounds alpha-CROWN tightened
    relu_boxes: int = 0  # input-mode sub-boxes handed to neuron splitting
    relu_proved: int = 0  # ... and proved there
    empty: int = 0  # ReLU domains whose splits contradict each other (closed)
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "domains": self.domains, "batches": self.batches,
                "max_depth": self.max_depth, "max_open": self.max_open, "undecided": self.undecided,
                "tightened": self.tightened, "relu_boxes": self.relu_boxes, "relu_proved": self.relu_proved,
                "empty": self.empty}

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


def corner_points(A: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, group: torch.Tensor,
                  n_groups: int, open_: torch.Tensor) -> torch.Tensor:
    """Minimizers of the linear lower bounds, one per (domain, open disjunct), plus centres.

    ``A: [B, S, n]`` input coefficients, ``lo, hi: [B, n]``, ``open_: [B, K]``.  For each
    disjunct the corner minimizing the sum of its rows' linear bounds is taken.  Returns
    ``[M, n]`` points.
    """
    bsz, rows, n = A.shape
    onehot = torch.zeros(n_groups, rows, dtype=A.dtype, device=A.device)
    onehot[group, torch.arange(rows, device=A.device)] = 1.0
    per_group = torch.einsum("ks,bsn->bkn", onehot, A)  # [B, K, n]
    corners = torch.where(per_group > 0, lo.unsqueeze(1), hi.unsqueeze(1))  # [B, K, n]
    pts = corners[open_]
    centres = (lo + hi) / 2
    return torch.cat([centres, pts], dim=0)


def holds(stats: Stats, recorder: Recorder | None = None, reason: str = "") -> Verdict:
    """HOLDS, with the proof tree the ``recorder`` collected."""
    return Verdict(Status.HOLDS, engine=ENGINE, seconds=stats.seconds, reason=reason,
                   certificate={"method": f"bab-{stats.mode}", "domains": stats.domains},
                   stats=stats.as_dict(), proof=None if recorder is None else recorder.build())


def violated(stats: Stats, cex: Counterexample) -> Verdict:
    return Verdict(Status.VIOLATED, engine=ENGINE, seconds=stats.seconds, counterexample=cex,
                   stats=stats.as_dict())


def undecided(stats: Stats, reason: str) -> Verdict:
    return Verdict(Status.UNKNOWN, engine=ENGINE, seconds=stats.seconds, reason=reason,
                   stats=stats.as_dict())


def domain_cap(options: BaBOptions, bytes_per_domain: int) -> int:
    """The open-domain cap: ``max_domains``, lowered so the pool fits in ``memory_mb``."""
    by_memory = max(1, options.memory_mb * 2**20 // max(1, bytes_per_domain))
    return int(min(options.max_domains, by_memory))


def relaxed_inputs(net: Network) -> list[str]:
    """Names of the nodes whose bounds CROWN's relaxations read (inputs of ReLU, maxpool...)."""
    ops = {n.name: n.op for n in net.nodes}
    users = net.users()
    return [n.name for n in net.nodes[1:] if any(ops[u] in RELAXED_OPS for u in users[n.name])]


def unstack(net: Network, known: torch.Tensor | None) -> dict[str, Bounds]:
    """Bounds of the relaxed nodes from their stacked form ``known [B, 2, m]`` (lower and upper
    bounds, flattened, in :func:`relaxed_inputs` order); empty without any."""
    fixed: dict[str, Bounds] = {}
    if known is None or not known.shape[2]:
        return fixed
    offset = 0
    for name in relaxed_inputs(net):
        size = net.node(name).size
        part = known[:, :, offset:offset + size]
        shape = (part.shape[0], *net.node(name).shape)
        fixed[name] = Bounds(part[:, 0].reshape(shape), part[:, 1].reshape(shape))
        offset += size
    return fixed
