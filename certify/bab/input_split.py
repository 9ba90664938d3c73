"""Batched input splitting: domains are sub-boxes ``[B, n]`` of the (flattened) input box.

Each batch is bounded with CROWN intermediate bounds and a CROWN (or alpha-CROWN) objective.
Sub-boxes that bound does not prove and that still have many unstable ReLUs get their
intermediate bounds tightened by alpha-CROWN (slopes searched in float32, the bound computed in
float64); their children inherit those bounds, so one tightening serves a whole subtree (ACAS Xu
4_7 prop_1: proved with under 1,000 sub-boxes in about 15 s, where plain CROWN left 7,000 of
112,000 open after 200 s).

Sub-boxes still unproved at depth ``hand_over.depth`` (12) with few unstable ReLUs are handed to
neuron splitting (beta-CROWN) inside each box, many boxes per batch
(:func:`certify.bab.neuron_split.split_boxes`); boxes it does not settle within a few dozen
domains come back and are handed again a few depths further down.  ACAS Xu's prop_2 on 3_3
and 4_2 needed this: their open sub-boxes crowd a thin slab where the property holds by
about 0.003, which halving boxes approaches very slowly and one or two ReLU splits settle.

Each round (:class:`_Search`) bounds a batch of sub-boxes, prunes the proved ones, hands the
deep hard ones over, tries counterexamples (the minimizers of the linear bounds, box corners
chosen by the signs of the input coefficients, and the centres; now and then a short fuzz of
the whole box; a short PGD in the most promising boxes) and cuts the rest in two along the
dimension with the largest ``|A_i| * width_i`` ("smart" branching).

Sound for any network CROWN supports; complete for piecewise-linear networks (small enough
boxes make every ReLU stable, where CROWN is exact).  Disjuncts proved on a domain stay
proved on its children.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from certify.bab.common import Stats, corner_points, domain_cap, holds, relaxed_inputs, undecided, unstack, violated
from certify.bab.domains import BoxDomains, Pool
from certify.bab.options import BaBOptions
from certify.bab.record import Recorder, search_dtype
from certify.bounds import (
    AlphaOptions,
    Bounds,
    NodeSlopes,
    alpha_crown_layers,
    alpha_crown_objective,
    crown_bounds,
    crown_objective,
    ibp,
    ibp_objective,
)
from certify.budget import Budget
from certify.falsify import Falsifier, pgd
from certify.network import Network
from certify.problem import Problem
from certify.spec_matrix import SpecMatrix
from certify.verdict import Counterexample, Status, Verdict

log = logging.getLogger(__name__)

#: A dimension narrower than this (relative to the root box) is never split further.
MIN_RELATIVE_WIDTH = 1e-10
#: Smart branching splits the widest dimension instead when that one is this many times wider
#: (relative to the root box) than the dimension its score picked.  Without it a dimension
#: whose input coefficients vanish (its influence hidden in the ReLU relaxations' gaps) is
#: never split and the bound never converges (ACAS Xu 2_2 prop_1 went 139 splits deep).
MAX_WIDTH_RATIO = 64.0
#: Domains per batch that get a short PGD attack (the ones with the worst lower bound).
PGD_DOMAINS = 32


@dataclass(frozen=True, slots=True)
class Bounding:
    """How a batch of sub-boxes is bounded: intermediate bounds recomputed by ``method``
    (``crown`` or ``forward``) when ``refresh``, else interval bounds intersected with the
    inherited ones; then tightened by alpha-CROWN with ``tighten``; the objective by CROWN, or
    by ``iterations`` alpha-CROWN iterations of step ``lr``."""

    iterations: int = 0
    lr: float = 0.25
    refresh: bool = True
    method: str = "crown"
    tighten: AlphaOptions | None = None


@dataclass(frozen=True, slots=True)
class BoxBounds:
    """A bounded batch: the domains (with the intermediate bounds their children inherit), the
    lower bound of every unsafe row ``[B, S]`` and its input coefficients ``A [B, S, n]``."""

    domains: BoxDomains
    lower: torch.Tensor
    A: torch.Tensor

    def take(self, index: torch.Tensor) -> BoxBounds:
        return BoxBounds(self.domains.take(index), self.lower[index], self.A[index])


def box_bounds(net: Network, box: Bounds, known: torch.Tensor | None, how: Bounding,
               budget: Budget | None = None) -> tuple[dict[str, Bounds], torch.Tensor, dict[str, NodeSlopes]]:
    """Bounds of every node on a batch of boxes (see :class:`Bounding`), intersected with the
    ``known`` bounds of the relaxed nodes (inherited from a parent box, which contains the child).

    ``known: [B, 2, m]`` stacks lower and upper bounds of the relaxed nodes (flattened, in
    order); the same layout is returned for the children to inherit, with the slopes that
    tightened them (empty without ``how.tighten``).
    """
    relaxed = relaxed_inputs(net)
    fixed = unstack(net, known)
    if how.refresh:  # the parent's bounds still hold on the child box: intersect them in
        out = crown_bounds(net, box, fixed or None, method=how.method, budget=budget)
    else:
        out = ibp(net, box, fixed)
    slopes: dict[str, NodeSlopes] = {}
    if how.tighten is not None:
        out, slopes = alpha_crown_layers(net, box, how.tighten, bounds=out, budget=budget)
    flat = [torch.stack([out[name].lower.flatten(1), out[name].upper.flatten(1)], dim=1) for name in relaxed]
    stacked = torch.cat(flat, dim=2) if flat else box.lower.new_zeros(box.lower.shape[0], 2, 0)
    return out, stacked, slopes


def bound_boxes(net: Network, spec: SpecMatrix, d: BoxDomains, how: Bounding, budget: Budget | None = None,
                recorder: Recorder | None = None) -> BoxBounds:
    """The lower bound of every unsafe row on each sub-box of ``d`` and its input coefficients
    (with the domains' ``known`` bounds updated); the disjuncts it rules out, and the slopes
    that tightened the intermediate bounds, go to the ``recorder``."""
    bsz = len(d)
    shape = net.input_shape
    box = Bounds(d.lo.reshape(bsz, *shape), d.hi.reshape(bsz, *shape))
    c = spec.batch(bsz)
    alphas = None
    with torch.no_grad():
        bounds, stacked, slopes = box_bounds(net, box, d.known if d.known.shape[2] else None, how, budget)
        d = replace(d, known=stacked)
        if budget is not None and budget.expired:  # no time for a backward pass: intervals
            return BoxBounds(d, ibp_objective(net, bounds, c), c.new_zeros(bsz, c.shape[1], d.lo.shape[1]))
        if how.iterations <= 0:
            best = crown_objective(net, bounds, c)
        else:
            def stop(lower: torch.Tensor) -> bool:
                return bool(((spec.disjunct_margins(lower) > 0) | ~d.open).all())

            best, alphas = alpha_crown_objective(net, bounds, c, AlphaOptions(iterations=how.iterations, lr=how.lr),
                                                 stop=stop, budget=budget)
    lower = best.lower.detach()
    if recorder is not None:
        recorder.slopes(d.node, slopes, net)
        flat = None if alphas is None else recorder.flat_alphas(alphas, lower)
        recorder.close(d.node, lower, d.open & (spec.disjunct_margins(lower) > 0), spec, flat,
                       recorder.unstable(bounds))
    return BoxBounds(d, lower, best.A.detach().flatten(2))


def _branch_dims(options: BaBOptions, spec: SpecMatrix, b: BoxBounds, root_width: torch.Tensor,
                 unclosed: torch.Tensor) -> torch.Tensor:
    """The dimension to split per domain: ``[B]`` (long).

    ``smart``: largest ``sum_k |A_{r_k, i}| * width_i`` over the still-open disjuncts ``k``,
    ``r_k`` being the row of ``k`` with the best margin (the one closest to proving it);
    ``widest``: the widest dimension relative to the root box.  (Predicting each child's margin
    from the linear bound, abCROWN's "sb", made ACAS Xu trees about twice as large here.)
    """
    width = b.domains.hi - b.domains.lo
    rel = width / root_width.clamp(min=1e-30)
    splittable = rel > MIN_RELATIVE_WIDTH
    if options.input.branching == "widest":
        score = rel.clone()
    else:
        m = spec.margins(b.lower)  # [B, S]
        dm = spec.disjunct_margins(b.lower)  # [B, K]
        best_row = m >= dm.gather(1, spec.group.unsqueeze(0).expand_as(m))
        weight = (best_row & unclosed.gather(1, spec.group.unsqueeze(0).expand_as(m))).to(b.A.dtype)
        score = torch.einsum("bs,bsn->bn", weight, b.A.abs()) * width
        score = score + 1e-9 * rel * score.amax(dim=1, keepdim=True).clamp(min=1e-30) + 1e-30 * rel
    score = torch.where(splittable, score, torch.full_like(score, -1.0))
    pick = score.argmax(dim=1)
    if options.input.branching == "widest":
        return pick
    widest = rel.argmax(dim=1)
    rows = torch.arange(pick.shape[0], device=pick.device)
    lagging = rel[rows, widest] > MAX_WIDTH_RATIO * rel[rows, pick]
    return torch.where(lagging, widest, pick)


def input_split(problem: Problem, options: BaBOptions, budget: Budget, recorder: Recorder | None = None) -> Verdict:
    """Decide ``problem`` by batched input splitting (see the module docstring); its proof tree
    goes to the ``recorder``."""
    return _Search(problem, options, budget, recorder).run()


def _unstable(known: torch.Tensor) -> torch.Tensor:
    """Unstable ReLUs per domain from its stacked intermediate bounds ``known: [B, 2, m]``: ``[B]``."""
    return ((known[:, 0] < 0) & (known[:, 1] > 0)).sum(dim=1)


def _tightening(options: BaBOptions) -> AlphaOptions | None:
    """The alpha-CROWN options that tighten intermediate bounds (None: no tightening)."""
    t = options.input.tighten
    if t.iterations <= 0:
        return None
    return AlphaOptions(iterations=t.iterations, lr=t.lr, search_dtype=torch.float32 if t.float32 else None)


class FuzzTurns:
    """Interleaves short runs of the batch fuzzer (each with a fresh seed) over the whole box with
    the branching, taking about ``share`` of the wall time: counterexamples in tiny regions are
    often found by sampling long before the tree reaches them."""

    def __init__(self, share: float, slice_seconds: float = 0.5) -> None:
        self.share = share
        self.slice = slice_seconds
        self.start = time.monotonic()
        self.spent = 0.0
        self.turns = 0

    def due(self) -> bool:
        elapsed = time.monotonic() - self.start
        return self.spent + self.slice <= self.share * (elapsed + self.slice)

    def run(self, problem: Problem, budget: Budget) -> Counterexample | None:
        from certify.fuzz.batch import fuzz_many
        from certify.fuzz.options import FuzzOptions

        t0 = time.monotonic()
        self.turns += 1
        seconds = min(self.slice, max(0.0, budget.remaining))
        (outcome,) = fuzz_many([problem], budget.at_most(seconds), FuzzOptions(seed=1000 + self.turns))
        self.spent += time.monotonic() - t0
        verdict = outcome.verdict
        return verdict.counterexample if verdict.status is Status.VIOLATED else None


class _Search:
    """One input-splitting search: the pool of open sub-boxes and the round that works on a
    bounded batch of them (prune, hand over, falsify, branch)."""

    def __init__(self, problem: Problem, options: BaBOptions, budget: Budget, recorder: Recorder | None) -> None:
        dtype, device = search_dtype(options.torch_dtype, problem.network, budget), budget.device
        self.problem, self.options, self.budget, self.recorder = problem, options, budget, recorder
        self.net = problem.network.to(dtype=dtype, device=device)
        self.spec = SpecMatrix.of(problem, dtype, device)
        self.falsify = Falsifier(problem, self.net, self.spec)
        self.stats = Stats("input")
        n, k = self.net.input_size, self.spec.n_groups
        self.lo = torch.as_tensor(np.array(problem.box.lower), dtype=dtype, device=device).reshape(1, n)
        self.hi = torch.as_tensor(np.array(problem.box.upper), dtype=dtype, device=device).reshape(1, n)
        self.root_width = (self.hi - self.lo)[0]
        m = sum(self.net.node(name).size for name in relaxed_inputs(self.net))
        self.cap = domain_cap(options, (2 * n + 2 * m + 2) * (torch.finfo(dtype).bits // 8) + k + 8)
        zero = torch.zeros(1, dtype=torch.long, device=device)
        self.root = BoxDomains(key=self.lo.new_full((1,), -torch.inf), depth=zero, node=zero, lo=self.lo, hi=self.hi,
                               open=torch.ones(1, k, dtype=torch.bool, device=device),
                               known=self.lo.new_zeros(1, 2, 0))
        self.pool: Pool[BoxDomains] = Pool(self.root, self.cap)  # replaced by the bounded root's children
        self.fuzz_turn = FuzzTurns(share=0.1)
        self.complete = problem.network.is_piecewise_linear

    def run(self) -> Verdict:
        cex = self.falsify.search(torch.cat([self.lo, self.hi, (self.lo + self.hi) / 2]))
        if cex is not None:
            return violated(self.stats, cex)
        # The root: CROWN intermediate bounds (tightened by alpha-CROWN), alpha-CROWN objective.
        how = Bounding(self.options.alpha_iterations, self.options.lr_alpha, tighten=_tightening(self.options))
        pending: BoxBounds | None = self._inheritable(bound_boxes(self.net, self.spec, self.root, how, self.budget,
                                                                  self.recorder))
        self.pool = Pool(pending.domains.take(slice(0, 0)), self.cap)  # empty, with the root's field shapes
        self.stats.domains += 1
        while pending is not None or len(self.pool):
            if self.budget.expired:
                return undecided(self.stats, f"timeout after {self.stats.domains} domains, {len(self.pool)} open"
                                 + ("" if self.complete else " (input splitting is incomplete for non-PL nets)"))
            if pending is None:
                pending = self._bound(self.pool.pop(self.options.input.batch_size))
            batch, pending = pending, None
            verdict = self._round(batch)
            if verdict is not None:
                return verdict
        if self.stats.undecided:
            return undecided(self.stats, f"{self.stats.undecided} sub-box(es) at minimal width neither proved nor "
                             f"falsified after {self.stats.domains} domains")
        return holds(self.stats, self.recorder)

    def _inheritable(self, b: BoxBounds) -> BoxBounds:
        """Forward bounds are not inherited: on huge trees inheriting costs more than it saves."""
        if self.options.input.intermediate == "forward":
            return replace(b, domains=replace(b.domains, known=b.domains.known[:, :, :0]))
        return b

    def _round(self, b: BoxBounds) -> Verdict | None:
        """Prune, hand over, falsify, branch one bounded batch; a verdict once one is reached."""
        unclosed = b.domains.open & ~(self.spec.disjunct_margins(b.lower) > 0)
        todo = unclosed.any(dim=1)
        if not bool(todo.any()):
            return None
        b, unclosed = b.take(todo), unclosed[todo]
        handed = self._handed(b.domains)
        if bool(handed.any()):
            keep, cex = self._hand_over(b.domains, handed)
            if cex is not None:
                return violated(self.stats, cex)
            b, unclosed = b.take(keep), unclosed[keep]
            if not bool(keep.any()):
                return None
        cex = self._falsify(b, unclosed)
        if cex is not None:
            return violated(self.stats, cex)
        return self._branch(b, unclosed)

    def _bound(self, d: BoxDomains) -> BoxBounds:
        """Bound a popped batch (see :class:`~certify.bab.options.InputSplitOptions` for the
        intermediate modes); then the sub-boxes still unproved (with at least ``tighten.unstable``
        unstable ReLUs, at every ``tighten.every``-th depth) get their intermediate bounds
        tightened by alpha-CROWN, which their children inherit."""
        opts = self.options.input
        mode = opts.intermediate
        how = Bounding(opts.alpha_iterations, self.options.lr_alpha, refresh=mode in ("crown", "forward"),
                       method=mode)
        out = self._inheritable(bound_boxes(self.net, self.spec, d, how, self.budget, self.recorder))
        self.stats.domains += len(d)
        self.stats.batches += 1
        if mode == "two-stage":
            out = self._rebound(out, self._unproved(out), None)
        if opts.tighten.iterations > 0 and mode != "forward":
            t = opts.tighten
            pick = (self._unproved(out) & (_unstable(out.domains.known) >= t.unstable)
                    & (out.domains.depth % t.every == 0))
            out = self._rebound(out, pick, _tightening(self.options))
            self.stats.tightened += int(pick.sum())
        return out

    def _unproved(self, b: BoxBounds) -> torch.Tensor:
        """Domains with an open disjunct their bound did not rule out: ``[B]`` (bool)."""
        return (b.domains.open & ~(self.spec.disjunct_margins(b.lower) > 0)).any(dim=1)

    def _rebound(self, b: BoxBounds, pick: torch.Tensor, tighten: AlphaOptions | None) -> BoxBounds:
        """Bound the ``pick``ed domains again, from their current intermediate bounds: recomputed
        by CROWN (``tighten`` None) or tightened by alpha-CROWN.  A disjunct the first bound ruled
        out stays closed; branching follows the new bound and its coefficients (mixing in the
        first one's steers it badly).  In the proof tree the second bound, and the subtree below,
        hang under a fork of each domain's node."""
        if not bool(pick.any()):
            return b
        idx = pick.nonzero().flatten()
        how = Bounding(self.options.input.alpha_iterations, self.options.lr_alpha, refresh=tighten is None,
                       tighten=tighten)
        d = b.domains
        closed = self.spec.disjunct_margins(b.lower[idx]) > 0
        d = replace(d, open=d.open.index_put((idx,), d.open[idx] & ~closed))
        if self.recorder is not None:
            d = replace(d, node=d.node.index_put((idx,), self.recorder.fork(d.node[idx], d.open[idx])))
        again = bound_boxes(self.net, self.spec, d.take(idx), how, self.budget, self.recorder)
        domains = replace(d, known=d.known.index_put((idx,), again.domains.known))
        return BoxBounds(domains, b.lower.index_put((idx,), again.lower), b.A.index_put((idx,), again.A))

    def _handed(self, d: BoxDomains) -> torch.Tensor:
        """Domains to hand to neuron splitting (see :class:`~certify.bab.options.HandOverOptions`): ``[B]``."""
        h = self.options.hand_over
        if h.depth <= 0:
            return torch.zeros_like(d.depth, dtype=torch.bool)
        return (d.depth >= h.depth) & ((d.depth - h.depth) % h.every == 0) & (_unstable(d.known) <= h.max_unstable)

    def _hand_over(self, d: BoxDomains, handed: torch.Tensor) -> tuple[torch.Tensor, Counterexample | None]:
        """Neuron splitting (beta-CROWN) inside the ``handed`` sub-boxes, all at once, for at most
        ``hand_over.seconds`` per box.  Returns which domains stay open and a counterexample if
        one was found."""
        from certify.bab.bounder import Target
        from certify.bab.neuron_split import Boxes, split_boxes

        idx = handed.nonzero().flatten()
        budget = self.budget.at_most(self.options.hand_over.seconds * idx.numel())
        target = Target(self.net, self.spec, self.falsify)
        out = split_boxes(target, Boxes(d.lo[idx], d.hi[idx], d.node[idx], d.open[idx], d.known[idx]), self.options,
                          budget, self.stats, self.recorder)
        keep = torch.ones_like(handed)
        keep[idx] = out.open_boxes
        self.stats.relu_boxes += idx.numel()
        self.stats.relu_proved += int((~out.open_boxes).sum())
        return keep, out.counterexample

    def _falsify(self, b: BoxBounds, unclosed: torch.Tensor) -> Counterexample | None:
        """The bounds' minimizers and the centres; now and then a short fuzz; a short PGD in the
        most promising domains (those closest to a violation)."""
        d = b.domains
        cex = self.falsify.search(corner_points(b.A, d.lo, d.hi, self.spec.group, self.spec.n_groups, unclosed))
        if cex is None and self.fuzz_turn.due():
            cex = self.fuzz_turn.run(self.problem, self.budget)
        if cex is None:
            top = torch.argsort(self.spec.disjunct_margins(b.lower).amin(dim=1))[:PGD_DOMAINS]
            x, cex = pgd(self.falsify, d.lo[top], d.hi[top], (d.lo[top] + d.hi[top]) / 2, 10)
            cex = cex if cex is not None else self.falsify.search(x)
        return cex

    def _branch(self, b: BoxBounds, unclosed: torch.Tensor) -> Verdict | None:
        """Cut each domain in two along its chosen dimension; sub-boxes already at minimal width
        are counted undecided."""
        dims = _branch_dims(self.options, self.spec, b, self.root_width, unclosed)
        d = b.domains
        width = d.hi - d.lo
        rows = torch.arange(dims.shape[0], device=dims.device)
        can = (width[rows, dims] / self.root_width[dims].clamp(min=1e-30)) > MIN_RELATIVE_WIDTH
        if not bool(can.all()):
            self.stats.undecided += int((~can).sum())
            b, unclosed, dims = b.take(can), unclosed[can], dims[can]
            d = b.domains
            rows = torch.arange(dims.shape[0], device=dims.device)
        mid = (d.lo[rows, dims] + d.hi[rows, dims]) / 2
        low, high = (d.node, d.node) if self.recorder is None else self.recorder.split_inputs(d.node, dims, mid)
        left_hi, right_lo = d.hi.clone(), d.lo.clone()
        left_hi[rows, dims] = mid
        right_lo[rows, dims] = mid
        margins = self.spec.disjunct_margins(b.lower)
        key = torch.where(unclosed, margins, torch.full_like(margins, torch.inf)).amin(dim=1)
        depth = d.depth + 1
        self.pool.push(BoxDomains(key=torch.cat([key, key]), depth=torch.cat([depth, depth]),
                                  node=torch.cat([low, high]), lo=torch.cat([d.lo, right_lo]),
                                  hi=torch.cat([left_hi, d.hi]),
                                  open=torch.cat([unclosed, unclosed]), known=torch.cat([d.known, d.known])))
        if depth.numel():
            self.stats.max_depth = max(self.stats.max_depth, int(depth.max()))
        self.stats.max_open = max(self.stats.max_open, len(self.pool))
        if len(self.pool) > self.pool.cap:
            return undecided(self.stats, f"domain cap {self.pool.cap} reached after {self.stats.domains} domains, "
                             f"{len(self.pool)} open")
        return None
