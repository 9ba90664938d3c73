"""Options and helpers shared by the two branch-and-bound modes.

A *domain* is a region of the input box (a sub-box, or the box plus ReLU split decisions).
Both modes keep a pool of open domains, bound a batch of them per tensor pass, try the points
the bounds suggest as counterexamples, drop the proved ones and split the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from certify.engines.base import Budget
from certify.engines.spec_matrix import SpecMatrix
from certify.network import Network
from certify.problem import Problem
from certify.replay import holds_float32_point
from certify.verdict import Counterexample, Status, Verdict

ENGINE = "bab"


@dataclass(frozen=True, slots=True)
class BaBOptions:
    """Options of the ``bab`` engine (every field can be set from a preset).

    mode: ``auto`` (input splitting when the input has at most ``input_dims`` entries or the
        net is not piecewise linear, ReLU splitting otherwise), ``input`` or ``relu``.
    batch_size: domains bounded per tensor pass in input mode; ``relu_batch_size`` in ReLU mode.
    max_domains: cap on open domains; past half of it the search goes depth first, at the cap
        it stops with UNKNOWN.  ``memory_mb`` lowers the cap so the pool fits in that memory.
    alpha_iterations: alpha-CROWN iterations on the root domain.
    branch_alpha_iterations: alpha-CROWN iterations per batch in input mode (0: plain CROWN).
    intermediate: input mode's intermediate bounds per sub-box: ``crown`` (recomputed),
        ``reuse`` (the parent's, intersected with IBP) or ``two-stage`` (reuse, then CROWN for
        the sub-boxes that were not proved).
    tighten_iterations: input mode tightens the intermediate bounds of sub-boxes CROWN did not
        prove by this many alpha-CROWN iterations per layer (0: never); their children inherit
        them.  Only sub-boxes with at least ``tighten_unstable`` unstable ReLUs, at every
        ``tighten_every``-th depth, with slopes searched in float32 when ``tighten_float32``
        (the bound itself is computed in ``dtype``) and step ``lr_tighten``.
    beta_iterations: joint alpha/beta iterations per batch in ReLU mode.
    intermediate_alpha_iterations: ReLU mode tightens the root's intermediate bounds (which every
        domain inherits) with this many alpha-CROWN iterations per layer (0: plain CROWN).
    refine_intermediate: ReLU mode recomputes each domain's intermediate bounds after its newest
        split by CROWN on its own bounds (a split neuron is exact there), before its alphas and
        betas are optimized; children inherit them.  Off, every domain keeps its box's root
        bounds, clamped by its splits.
    refine_slopes: the refinement uses, per neuron, the ReLU slopes the root's alpha-CROWN found
        for that neuron's bounds (sound for any slopes in [0, 1]) instead of CROWN's defaults.
    search_float32: ReLU mode searches alphas and betas in float32 (1.4-1.6x as fast on a
        2-core CPU); the bound that proves a domain is then recomputed in ``dtype`` with the
        slopes and multipliers found (any slopes in [0, 1] and multipliers >= 0 give a sound
        bound).
    joint_share: ReLU mode first searches every disjunct of the unsafe set at once (a domain
        carries those still open in it) for this share of the time; if that does not settle the
        problem, the disjuncts are proved one after the other, each by a search of its own (one
        objective, branching chosen for it alone, a domain computing only its rows).  Either
        order wins on some MNIST-FC instances by minutes (1: joint only).
    branching: input mode ``smart`` (|A_i| * width_i from the linear bounds) or ``widest``;
        ReLU mode always uses a BaBSR score.
    attack_restarts / attack_steps: the PGD attack on the root in ReLU mode (0 disables).
    leaf_lp: solve fully split ReLU leaves exactly with an LP (scipy), keeping ReLU mode complete.
    relu_depth, relu_every, relu_max_unstable, relu_box_domains, relu_seconds: input mode hands
        unproved sub-boxes at depth ``relu_depth`` (and every ``relu_every`` depths below it)
        with at most ``relu_max_unstable`` unstable ReLUs to ReLU splitting, all of a batch's at
        once (:func:`certify.bab.relu_split.split_boxes`); a box is given back to input splitting
        after ``relu_box_domains`` ReLU domains, and a hand-over takes at most ``relu_seconds``
        per box (``relu_depth`` 0: never).  Near a thin slab where the property is tight,
        splitting a handful of ReLUs makes the bound exact where halving the box again barely
        helps (ACAS Xu 3_3 and 4_2 prop_2: proved in 41-59 s, unknown after 116 s before).
    """

    mode: str = "auto"
    input_dims: int = 16
    batch_size: int = 1024
    relu_batch_size: int = 64
    max_domains: int = 1_000_000
    memory_mb: int = 2048
    alpha_iterations: int = 20
    branch_alpha_iterations: int = 0
    intermediate: str = "crown"
    tighten_iterations: int = 5
    tighten_unstable: int = 32
    tighten_every: int = 2
    tighten_float32: bool = True
    lr_tighten: float = 0.5
    beta_iterations: int = 24
    intermediate_alpha_iterations: int = 20
    refine_intermediate: bool = True
    refine_slopes: bool = True
    search_float32: bool = True
    joint_share: float = 0.5
    lr_alpha: float = 0.25
    lr_beta: float = 0.1
    branching: str = "smart"
    attack_restarts: int = 8
    attack_steps: int = 40
    leaf_lp: bool = True
    relu_depth: int = 12
    relu_every: int = 3
    relu_box_domains: int = 64
    relu_max_unstable: int = 96
    relu_seconds: float = 1.0
    dtype: str = "float64"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "input", "relu"):
            raise ValueError(f"bab mode must be auto, input or relu, not {self.mode!r}")
        if self.branching not in ("smart", "widest"):
            raise ValueError(f"bab branching must be smart or widest, not {self.branching!r}")
        if self.intermediate not in ("crown", "forward", "reuse", "two-stage"):
            raise ValueError(f"bab intermediate must be crown, forward, reuse or two-stage, "
                             f"not {self.intermediate!r}")
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"bab dtype must be float64 or float32, not {self.dtype!r}")
        if self.tighten_every < 1 or self.tighten_iterations < 0:
            raise ValueError("bab tighten_every must be positive and tighten_iterations not negative")
        if not 0.0 <= self.joint_share <= 1.0:
            raise ValueError(f"bab joint_share must be in [0, 1], not {self.joint_share}")
        if self.batch_size < 1 or self.relu_batch_size < 1 or self.max_domains < 1:
            raise ValueError("bab batch sizes and max_domains must be positive")

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32


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
    relu_boxes: int = 0  # input-mode sub-boxes handed to ReLU splitting
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


class Falsifier:
    """Checks candidate inputs against the unsafe set on the concrete network.

    A point counts only when it violates in float64 *and* in float32 (the precision
    onnxruntime replays in), so a VIOLATED verdict is not lost to rounding at replay.  A box that
    holds no float32 point (an input fixed to a value such as 0.1) is replayed in float64
    (:mod:`certify.replay`), so there a point counts when it violates in float64 alone.
    """

    def __init__(self, problem: Problem, net: Network, spec: SpecMatrix) -> None:
        self.net = net
        self.float32 = holds_float32_point(problem.box)
        self.net32 = problem.network.to(dtype=torch.float32, device=net.device)
        self.spec = spec
        self.lo = torch.as_tensor(np.array(problem.box.lower), dtype=net.dtype, device=net.device).reshape(-1)
        self.hi = torch.as_tensor(np.array(problem.box.upper), dtype=net.dtype, device=net.device).reshape(-1)
        self.in_shape = net.input_shape

    def violation(self, net: Network, x: torch.Tensor) -> torch.Tensor:
        """``min_k max_{i in k} (C_i y - b_i)`` per point: ``[N]``; < 0 means unsafe."""
        y = net.forward(x.reshape(-1, *self.in_shape).to(net.dtype)).flatten(1).to(self.spec.C.dtype)
        rows = y @ self.spec.C.T - self.spec.b  # [N, S]
        out = rows.new_full((rows.shape[0], self.spec.n_groups), -torch.inf)
        out = out.scatter_reduce(1, self.spec.group.unsqueeze(0).expand_as(rows), rows, reduce="amax")
        return out.min(dim=1).values

    def search(self, x: torch.Tensor) -> Counterexample | None:
        """The most violating of the points ``x: [N, n_in]`` (flat), if one violates."""
        if x.shape[0] == 0:
            return None
        with torch.no_grad():
            x = torch.minimum(torch.maximum(x, self.lo), self.hi)
            v = self.violation(self.net, x)
            cand = (v < 0).nonzero().flatten()
            if cand.numel() == 0:
                return None
            cand = cand[torch.argsort(v[cand])][:64]
            if not self.float32:  # replayed in float64: the float64 violation is the one that counts
                xb = x[cand[0]].reshape(1, *self.in_shape)
                y = self.net.forward(xb)
                return Counterexample(xb[0].cpu().numpy().astype(np.float64), y[0].cpu().numpy().astype(np.float64))
            v32 = self.violation(self.net32, x[cand].to(torch.float32))
            ok = (v32 < 0).nonzero().flatten()
            if ok.numel() == 0:
                return None
            best = cand[ok[0]]
            xb = x[best].reshape(1, *self.in_shape)
            y = self.net32.forward(xb.to(torch.float32))
        return Counterexample(xb[0].cpu().numpy().astype(np.float64), y[0].cpu().numpy().astype(np.float64))


def pgd_points(falsifier: Falsifier, lo: torch.Tensor, hi: torch.Tensor, start: torch.Tensor,
               steps: int = 10) -> torch.Tensor:
    """Signed-gradient descent on the violation from ``start: [N, n]``, each point kept inside its
    own box ``lo, hi: [N, n]`` (the most promising domains).  Returns the final points."""
    step = (hi - lo) / 4
    x = start.clone()
    for _ in range(steps):
        with torch.enable_grad():
            xv = x.detach().requires_grad_(True)
            v = falsifier.violation(falsifier.net, xv).sum()
            (g,) = torch.autograd.grad(v, xv)
        x = torch.minimum(torch.maximum(x - step * g.sign(), lo), hi)
        step = step * 0.7
    return x.detach()


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


def holds(stats: Stats, reason: str = "") -> Verdict:
    return Verdict(Status.HOLDS, engine=ENGINE, seconds=stats.seconds, reason=reason,
                   certificate={"method": f"bab-{stats.mode}", "domains": stats.domains},
                   stats=stats.as_dict())


def violated(stats: Stats, cex: Counterexample) -> Verdict:
    return Verdict(Status.VIOLATED, engine=ENGINE, seconds=stats.seconds, counterexample=cex,
                   stats=stats.as_dict())


def undecided(stats: Stats, reason: str) -> Verdict:
    return Verdict(Status.UNKNOWN, engine=ENGINE, seconds=stats.seconds, reason=reason,
                   stats=stats.as_dict())


def out_of_time(budget: Budget, margin: float = 0.0) -> bool:
    return budget.remaining <= margin


def domain_cap(options: BaBOptions, bytes_per_domain: int) -> int:
    """The open-domain cap: ``max_domains``, lowered so the pool fits in ``memory_mb``."""
    by_memory = max(1, options.memory_mb * 2**20 // max(1, bytes_per_domain))
    return int(min(options.max_domains, by_memory))
