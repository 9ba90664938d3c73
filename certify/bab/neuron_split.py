"""Batched neuron splitting with beta-CROWN bounds: ReLU splitting, and branching on any
elementwise nonlinearity (sigmoid, tanh, sign, sin, ...), as GenBaB does.

A domain is the whole input box plus an interval ``[l_j, u_j]`` for every *split neuron*: the
pre-activation ``z_j`` of an elementwise activation (ReLU's at 0: ``z_j >= 0`` or ``z_j <= 0``;
any other at a point ``p`` inside its interval).  Each domain carries its own intermediate
bounds: the root's CROWN bounds tightened by alpha-CROWN, cut by the domain's splits (so a split
neuron is relaxed on its smaller interval, a ReLU exactly), and, for the layers after its newest
split, recomputed by CROWN on the domain's own bounds (``refine_intermediate``).  Every bound
is computed on the domain's subset of the box and minimized over the whole box, so it is a
sound lower bound on the domain, and the two children of a split cover their parent.

The newest split of each neuron also enters the final bound by a Lagrange multiplier
(beta-CROWN): the split ``s_j (z_j - p_j) >= 0`` (``s_j = +1`` for the upper child ``z_j >= p``,
``-1`` for the lower one) holds on the domain, so for ``beta_j >= 0`` adding
``-s_j beta_j (z_j - p_j)`` to the objective keeps a sound lower bound, and optimizing ``beta``
(with the ReLU lower slopes ``alpha``) tightens it.  Children start from their parent's
alphas and betas.  The alphas and betas are searched in float32 (``search_float32``); the
bound that decides a domain is recomputed with them in the search's own dtype.

The same search runs inside many input boxes at once (:func:`split_boxes`: each domain names
its box), which is how input splitting hands over its hardest sub-boxes.

Each round (:class:`_Search`) selects a batch of open domains, refines and bounds them, prunes
the proved ones, tries the points their bounds suggest as counterexamples, and branches the
rest on one neuron each (:func:`choose_split`: the estimated bound gain, for a ReLU BaBSR's
intercept score).  On an affine-and-ReLU network a domain without unstable neurons left is
linear on its region: an exact LP decides it (:mod:`certify.bab.leaf`), so the search is
complete there.  On other networks a domain whose neurons are all too narrow to split is left
undecided.  The batch shrinks so that one bound pass fits in ``neuron.batch_memory_mb``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import torch

from certify.bab.bounder import Bounded, Bounder, Layout, Root, Target, domain_rows
from certify.bab.common import Stats, corner_points, domain_cap, holds, undecided, unstack, violated
from certify.bab.domains import Pool, SplitDomains
from certify.bab.leaf import decide_leaf
from certify.bab.options import BaBOptions
from certify.bab.record import Recorder, search_dtype
from certify.bounds import AlphaOptions, Bounds, alpha_crown_layers, crown_bounds
from certify.budget import Budget
from certify.falsify import Falsifier, pgd
from certify.network import AFFINE_OPS, Network, Node, Op
from certify.problem import Problem
from certify.relax import INEXACT, RELAXATIONS
from certify.spec_matrix import PROOF_TOLERANCE, SpecMatrix
from certify.verdict import Counterexample, Verdict

log = logging.getLogger(__name__)

#: A neuron whose interval is narrower than this (relative to its root interval) is not split.
MIN_RELATIVE_WIDTH = 1e-6
#: Ops a domain may still be split on; the others (sigmoid, sin, ...) are split at the midpoint,
#: these at 0 when the interval straddles it (their jump or kink is there).
SPLIT_AT_ZERO: frozenset[Op] = frozenset({Op.RELU, Op.LEAKY_RELU, Op.SIGN, Op.SIGMOID, Op.TANH})


def leaf_exact(net: Network) -> bool:
    """Whether a domain with no unstable neuron left is linear on its region (every other op
    affine): then the leaf LP decides it."""
    return net.ops() <= AFFINE_OPS | {Op.RELU}


@dataclass(frozen=True, slots=True)
class Split:
    """Per domain, the neuron to split (``-1``: none left) and the point: ``[B]`` each."""

    neuron: torch.Tensor
    point: torch.Tensor


def choose_split(layout: Layout, d: SplitDomains, at: torch.Tensor, root_width: torch.Tensor) -> Split:
    """The neuron with the largest estimated gain per domain, and where to split it.

    The gain is the open rows' coefficient at the neuron's output times the part of its
    relaxation's vertical gap the split removes.  For a ReLU that is BaBSR's intercept score
    (the chord's gap ``-l u / (u - l)`` where the coefficient is negative, ``min(-l, u)`` as a
    tie-breaker): a split makes it exact.  For the others it is the gap on the neuron's
    interval less the wider of the gaps on its two halves (a split only narrows them).  ReLUs,
    leaky ReLUs, signs and S-shaped activations are split at 0 when their interval straddles it,
    every other neuron at its interval's midpoint.  Neurons whose relaxation is already exact
    there, or whose interval is too narrow, are not split."""
    lo, hi = d.lo, d.hi
    width = (hi - lo).clamp(min=1e-30)
    score, point, can = [], [], []
    for k, act in enumerate(layout.acts):
        l, u, c = layout.part(lo, k), layout.part(hi, k), layout.part(at, k)
        wide = layout.part(width, k) > MIN_RELATIVE_WIDTH * layout.part(root_width, k).clamp(min=1e-30)
        inexact = INEXACT[act.op](l, u) if act.op in INEXACT else torch.ones_like(wide)
        zero = (l < 0) & (u > 0) & (act.op in SPLIT_AT_ZERO)
        p = torch.where(zero, torch.zeros_like(l), (l + u) / 2)
        if act.op is Op.RELU:
            intercept = (-l * u / (u - l).clamp(min=1e-30)).clamp(min=0)
            s = (-c).clamp(min=0) * intercept + 1e-4 * c.abs() * torch.minimum(-l, u) + 1e-12 * intercept
            ok = (l < 0) & (u > 0) & (layout.part(d.splits, k) == 0)
        else:  # the gap the split removes: the parent's, less the wider of its halves'
            gained = _gap(act, l, u) - torch.maximum(_gap(act, l, p), _gap(act, p, u))
            s = c.abs() * gained.clamp(min=0) + 1e-12 * layout.part(width, k)
            ok = inexact & wide
        score.append(s)
        point.append(p)
        can.append(ok)
    score_t, point_t, can_t = torch.cat(score, 1), torch.cat(point, 1), torch.cat(can, 1)
    score_t = torch.where(can_t, score_t, torch.full_like(score_t, -1.0))
    best = score_t.argmax(dim=1)
    none = ~can_t.any(dim=1)
    return Split(torch.where(none, torch.full_like(best, -1), best), point_t.gather(1, best.unsqueeze(1))[:, 0])


def _gap(act: Node, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The largest vertical distance between the upper and the lower line of ``act``'s
    relaxation on ``[l, u]`` (at an end of the interval: the lines are straight)."""
    r = RELAXATIONS[act.op](l, u, act.attrs)
    spread = r.upper_slope - r.lower_slope
    gap = torch.maximum(spread * l, spread * u) + r.upper_bias - r.lower_bias
    return torch.nan_to_num(gap, nan=0.0, posinf=1e30).clamp(min=0)


def _attack(falsify: Falsifier, lo: torch.Tensor, hi: torch.Tensor, options: BaBOptions,
            budget: Budget) -> Counterexample | None:
    """PGD with random restarts (and the centre) on the violation margin."""
    restarts, steps = options.neuron.attack_restarts, options.neuron.attack_steps
    if restarts <= 0 or steps <= 0:
        return None
    gen = torch.Generator(device="cpu").manual_seed(options.seed)
    x = lo + (hi - lo) * torch.rand(restarts, lo.numel(), generator=gen, dtype=lo.dtype).to(lo.device)
    x = torch.cat([x, ((lo + hi) / 2).reshape(1, -1)])
    x, cex = pgd(falsify, lo, hi, x, steps, shrink=0.5, every=10, budget=budget)
    return cex if cex is not None else falsify.search(x)


@dataclass(frozen=True, slots=True)
class Boxes:
    """The input boxes a search runs in: ``lo, hi [NB, n]``, their nodes in the proof tree
    ``node [NB]``, the disjuncts still open in each ``open [NB, K]`` and the bounds known on
    them (``known [NB, 2, m]``, stacked as in :func:`~certify.bab.common.unstack`; None: none)."""

    lo: torch.Tensor
    hi: torch.Tensor
    node: torch.Tensor
    open: torch.Tensor
    known: torch.Tensor | None = None

    @staticmethod
    def whole(lo: torch.Tensor, hi: torch.Tensor, n_groups: int, node: int = 0) -> Boxes:
        """One box, every disjunct open."""
        return Boxes(lo, hi, torch.full((1,), node, dtype=torch.long, device=lo.device),
                     torch.ones(1, n_groups, dtype=torch.bool, device=lo.device))


def neuron_split(problem: Problem, options: BaBOptions, budget: Budget, recorder: Recorder | None = None) -> Verdict:
    """Decide ``problem`` by batched neuron splitting (see the module docstring); its proof
    tree goes to the ``recorder``."""
    dtype, device = search_dtype(options.torch_dtype, problem.network, budget), budget.device
    net = problem.network.to(dtype=dtype, device=device)
    spec = SpecMatrix.of(problem, dtype, device)
    falsify = Falsifier(problem, net, spec)
    stats = Stats("neuron")
    n_in = net.input_size
    lo = torch.as_tensor(np.array(problem.box.lower), dtype=dtype, device=device).reshape(1, n_in)
    hi = torch.as_tensor(np.array(problem.box.upper), dtype=dtype, device=device).reshape(1, n_in)

    cex = falsify.search(torch.cat([lo, hi, (lo + hi) / 2]))
    if cex is None:
        cex = _attack(falsify, lo[0], hi[0], options, budget)
    if cex is not None:
        return violated(stats, cex)
    root = root_bounds(net, lo, hi, options, budget)
    if recorder is not None:
        recorder.slopes(torch.zeros(1, dtype=torch.long), root.slopes, net)
    alone = spec.n_groups > 1 and options.neuron.joint_share < 1
    joint = budget.share(options.neuron.joint_share) if alone else budget
    start = 0
    if alone and recorder is not None:  # the joint search in a fork of its own: pruned if it gives up
        start = recorder.builder.same(0, np.ones(spec.n_groups, dtype=bool))
    out = _Search(Target(net, spec, falsify), Boxes.whole(lo, hi, spec.n_groups, start), options, joint, stats,
                  recorder, root=root).run()
    if out.counterexample is not None:
        return violated(stats, out.counterexample)
    if not out.reason:
        return holds(stats, recorder)
    if not alone or budget.expired:
        return undecided(stats, out.reason)
    # The joint search did not settle it: each disjunct by a search of its own, a single
    # objective with branching chosen for it alone (the unsafe set is their union).
    first = out.reason
    if recorder is not None:
        recorder.abandon(torch.tensor([start]))
    for k in range(spec.n_groups):
        view, node = (None, 0) if recorder is None else recorder.alone(k)
        out = _Search(Target(net, spec.disjunct(k), falsify), Boxes.whole(lo, hi, 1, node), options, budget, stats,
                      view, root=root).run()
        if out.counterexample is not None:
            return violated(stats, out.counterexample)
        if out.reason:
            return undecided(stats, f"all disjuncts at once: {first}; disjunct {k + 1} of {spec.n_groups} "
                                    f"alone: {out.reason}")
    return holds(stats, recorder)


def root_bounds(net: Network, lo: torch.Tensor, hi: torch.Tensor, options: BaBOptions,
                budget: Budget | None = None, known: dict[str, Bounds] | None = None) -> Root:
    """CROWN bounds of every node on the boxes ``lo, hi: [NB, n]`` (intersected with the
    ``known`` ones), the intermediate ones tightened by alpha-CROWN (every domain of a box
    starts from them)."""
    n_boxes = lo.shape[0]
    root_box = Bounds(lo.reshape(n_boxes, *net.input_shape), hi.reshape(n_boxes, *net.input_shape))
    with torch.no_grad():
        root = crown_bounds(net, root_box, known or None, budget=budget)
    if options.neuron.intermediate_alpha_iterations <= 0:
        return Root(root, {})
    alpha = AlphaOptions(iterations=options.neuron.intermediate_alpha_iterations, lr=options.lr_alpha)
    root, slopes = alpha_crown_layers(net, root_box, alpha, root, budget)
    return Root(root, slopes if options.neuron.refine_slopes else {})


@dataclass(frozen=True, slots=True)
class BoxesOutcome:
    """What neuron splitting inside several input boxes settled: a counterexample (in one of the
    boxes), or which boxes are still open (``[NB]`` bool) and why (empty when none is)."""

    counterexample: Counterexample | None
    open_boxes: torch.Tensor
    reason: str


def split_boxes(target: Target, boxes: Boxes, options: BaBOptions, budget: Budget, stats: Stats,
                recorder: Recorder | None = None) -> BoxesOutcome:
    """Neuron splitting inside the input ``boxes`` at once, with the hand-over options
    (``options.hand_over``): the boxes' domains share the batches, shallowest first; a box is
    proved when none of its domains is left open, and given up (left open) once
    ``hand_over.box_domains`` of its domains have been bounded.  Input splitting hands its
    hardest sub-boxes here.  Each box's search hangs under a fork of its node in the proof
    tree, pruned if the box is given up."""
    handed = replace(options, neuron=options.hand_over.neuron, alpha_iterations=options.hand_over.alpha_iterations)
    if recorder is not None:
        boxes = replace(boxes, node=recorder.fork(boxes.node, boxes.open))
    out = _Search(target, boxes, handed, budget, stats, recorder, box_domains=options.hand_over.box_domains).run()
    if recorder is not None and bool(out.open_boxes.any()):
        recorder.abandon(boxes.node[out.open_boxes])
    return out


class _Search:
    """One search: the pool of open split domains and the round that works on a batch of them
    (select, refine, bound, prune, falsify, branch).  With ``box_domains`` (many boxes) the
    shallowest domains go first, so every box gets its first splits before any gets deep ones,
    and a box is given up after that many domains; otherwise the worst-bounded go first.

    Eight parameters: the target, the input boxes, the options, the budget, the shared counters
    and the proof recorder are all needed; the per-box cap and the root bounds are optional."""

    def __init__(self, target: Target, boxes: Boxes, options: BaBOptions, budget: Budget, stats: Stats,
                 recorder: Recorder | None, box_domains: int | None = None, root: Root | None = None) -> None:
        net, spec = target.net, target.spec
        lo, hi = boxes.lo, boxes.hi
        self.net, self.spec, self.falsify, self.lo, self.hi = net, spec, target.falsify, lo, hi
        self.options, self.budget, self.stats, self.box_domains = options, budget, stats, box_domains
        self.recorder = recorder
        self.exact = leaf_exact(net)
        if root is None:
            root = root_bounds(net, lo, hi, options, budget, unstack(net, boxes.known))
            if recorder is not None:
                recorder.slopes(boxes.node, root.slopes, net)
        self.bounder = Bounder(net, spec, root, torch.float32 if options.neuron.search_float32 else None)
        self.layout = self.bounder.layout
        n_boxes, rows, total = lo.shape[0], spec.C.shape[0], self.layout.total
        self.store = torch.float32  # alphas and betas are stored compactly; any value in range is sound
        self.batch_size = self._batch_size(rows)
        device = lo.device
        b = self.bounder
        first = SplitDomains(
            key=lo.new_full((n_boxes,), -torch.inf), depth=torch.zeros(n_boxes, dtype=torch.long, device=device),
            node=boxes.node, splits=torch.zeros(n_boxes, total, dtype=torch.int8, device=device),
            box=torch.arange(n_boxes, device=device),
            alpha=(b.u0 >= -b.l0).to(self.store).unsqueeze(1).expand(n_boxes, rows, total),
            beta=torch.zeros(n_boxes, rows, total, dtype=self.store, device=device),
            open=boxes.open, lo=b.l0, hi=b.u0,
            after=torch.full((n_boxes,), len(self.layout.acts), dtype=torch.long, device=device))
        self.root_width = (b.u0 - b.l0)
        cap = domain_cap(options, total * (1 + 8 * rows + 2 * lo.element_size()) + 80 + spec.n_groups)
        self.pool: Pool[SplitDomains] = Pool(first, cap)
        self.given_up = torch.zeros(n_boxes, dtype=torch.bool, device=device)  # or undecided
        self.spent = torch.zeros(n_boxes, dtype=torch.long, device=device)
        self.rounds = 0

    def _batch_size(self, rows: int) -> int:
        """``neuron.batch_size``, shrunk so that one bound pass fits in ``neuron.batch_memory_mb``:
        per domain about 8 tensors of ``rows x`` the widest node (the backward pass, its
        gradients) and 6 of ``rows x`` the split neurons (alphas, betas, Adam's moments)."""
        widest = max(n.size for n in self.net.nodes)
        per_domain = 8 * rows * (8 * widest + 6 * self.layout.total)
        fit = self.options.neuron.batch_memory_mb * 2**20 // max(1, per_domain)
        size = max(1, min(self.options.neuron.batch_size, fit))
        if size < self.options.neuron.batch_size:
            log.info("neuron splitting: batches of %d domains (of %d) to stay within %d MB", size,
                     self.options.neuron.batch_size, self.options.neuron.batch_memory_mb)
        return size

    def run(self) -> BoxesOutcome:
        while len(self.pool):
            if self.budget.expired:
                return self._open(f"timeout after {self.stats.domains} domains, {len(self.pool)} open")
            cex = self._round()
            if cex is not None:
                return BoxesOutcome(cex, self._open("").open_boxes, "")
            if len(self.pool) > self.pool.cap:
                return self._open(f"domain cap {self.pool.cap} reached after {self.stats.domains} domains, "
                                  f"{len(self.pool)} open")
        if bool(self.given_up.any()):
            what = "not decided by the leaf LP" if self.exact else "too narrow to split further"
            return self._open(f"{self.stats.undecided} domain(s) {what} after {self.stats.domains} domains"
                              if self.box_domains is None else f"{int(self.given_up.sum())} box(es) given up or "
                                                               f"undecided")
        return self._open("")

    def _open(self, reason: str) -> BoxesOutcome:
        left = self.given_up.clone()
        left[self.pool.domains.box] = True
        return BoxesOutcome(None, left, reason)

    def _round(self) -> Counterexample | None:
        """One batch: select, refine, bound, prune, falsify, branch."""
        d = self.pool.pop(self.batch_size, shallow_first=self.box_domains is not None)
        iterations = self.options.alpha_iterations if self.rounds == 0 else self.options.neuron.beta_iterations
        self.rounds += 1
        self.stats.domains += len(d)
        self.stats.batches += 1
        if self.options.neuron.refine_intermediate:
            d = self._refine(d)
            if not len(d):
                return None
        lr = (self.options.lr_alpha, self.options.neuron.lr_beta)
        res = self.bounder.bound(d, iterations, lr, self.budget)
        d, res, unclosed = self._prune(d, res)
        if not len(d):
            return None
        cex = self.falsify.search(corner_points(res.coef, self.lo[d.box], self.hi[d.box], self.spec.group,
                                                self.spec.n_groups, unclosed))
        if cex is not None:
            return cex
        return self._branch(d, res, unclosed)

    def _refine(self, d: SplitDomains) -> SplitDomains:
        """The domains' intermediate bounds refined; those whose bounds cross (beyond rounding:
        the splits contradict each other) are empty and closed."""
        d = self.bounder.refine(d, self.budget)
        gap = d.lo - d.hi - PROOF_TOLERANCE * (1 + d.lo.abs() + d.hi.abs())
        feasible = ~(gap > 0).any(dim=1)
        if not bool(feasible.all()):
            self.stats.empty += int((~feasible).sum())
            d = d.take(feasible)
        return d

    def _prune(self, d: SplitDomains, res: Bounded) -> tuple[SplitDomains, Bounded, torch.Tensor]:
        """Drop the proved domains (and, with many boxes, those of boxes given up); returns the
        rest, their bounds and their disjuncts still open ``[B, K]``."""
        if self.box_domains is not None:
            n_boxes = self.given_up.shape[0]
            self.spent += torch.bincount(d.box, minlength=n_boxes)
            over = self.spent > self.box_domains
            if bool(over.any()):
                self.given_up |= over
                self.pool.drop(~over[self.pool.domains.box])
        closed = self.spec.disjunct_margins(res.lower) > 0
        if self.recorder is not None:
            self.recorder.close(d.node, res.lower, d.open & closed, self.spec, res.alpha, (d.lo < 0) & (d.hi > 0),
                                (res.beta, d.splits))
        unclosed = d.open & ~closed
        todo = unclosed.any(dim=1)
        if self.box_domains is not None:
            todo &= ~self.given_up[d.box]
        sel = todo.nonzero().flatten()
        return d.take(sel), res.take(sel), unclosed[sel]

    def _branch(self, d: SplitDomains, res: Bounded, unclosed: torch.Tensor) -> Counterexample | None:
        """Split each domain on its chosen neuron into two children; decide (or give up) the
        domains with nothing left to split."""
        split = choose_split(self.layout, d, res.at, domain_rows(self.root_width, d.box))
        leaf = split.neuron < 0
        if bool(leaf.any()):
            cex = self._leaves(d.take(leaf), unclosed[leaf])
            if cex is not None:
                return cex
            go = ~leaf
            d, res, unclosed, split = d.take(go), res.take(go), unclosed[go], Split(split.neuron[go], split.point[go])
        if split.neuron.numel() == 0:
            return None
        r = torch.arange(split.neuron.numel(), device=split.neuron.device)
        upper, lower = d.splits.clone(), d.splits.clone()
        upper[r, split.neuron], lower[r, split.neuron] = 1, -1
        up_lo, low_hi = d.lo.clone(), d.hi.clone()
        up_lo[r, split.neuron] = torch.maximum(d.lo[r, split.neuron], split.point)  # z >= p
        low_hi[r, split.neuron] = torch.minimum(d.hi[r, split.neuron], split.point)  # z <= p
        margins = self.spec.disjunct_margins(res.lower)
        key = torch.where(unclosed, margins, torch.full_like(margins, torch.inf)).amin(dim=1)
        starts = torch.tensor(self.layout.offsets, device=split.neuron.device)
        layer = torch.searchsorted(starts, split.neuron, right=True) - 1
        low, high = ((d.node, d.node) if self.recorder is None
                     else self.recorder.split_neurons(d.node, split.neuron, split.point))
        children = SplitDomains(
            key=torch.cat([key, key]), depth=torch.cat([d.depth + 1, d.depth + 1]), node=torch.cat([high, low]),
            splits=torch.cat([upper, lower]),
            box=torch.cat([d.box, d.box]), alpha=torch.cat([res.alpha, res.alpha]).to(self.store),
            beta=torch.cat([res.beta, res.beta]).to(self.store), open=torch.cat([unclosed, unclosed]),
            lo=torch.cat([up_lo, d.lo]), hi=torch.cat([d.hi, low_hi]), after=torch.cat([layer, layer]))
        self.pool.push(children)
        self.stats.max_depth = max(self.stats.max_depth, int(children.depth.max()))
        self.stats.max_open = max(self.stats.max_open, len(self.pool))
        return None

    def _leaves(self, d: SplitDomains, unclosed: torch.Tensor) -> Counterexample | None:
        """Domains with nothing left to split: linear on their regions on affine-and-ReLU nets,
        decided by an exact LP; otherwise undecided."""
        for j in range(len(d)):
            proved, cex = (decide_leaf(self.bounder, self.falsify, d.take(slice(j, j + 1)), unclosed[j], self.recorder)
                           if self.exact and self.options.neuron.leaf_lp else (False, None))
            if cex is not None:
                return cex
            if not proved:
                self.stats.undecided += 1
                self.given_up[d.box[j]] = True
        return None
