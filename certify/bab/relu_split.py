"""Batched ReLU splitting with beta-CROWN bounds.

A domain is the whole input box plus split decisions ``s_j in {+1 (z_j >= 0), -1 (z_j <= 0)}``
on unstable ReLU pre-activations ``z_j``.  Each domain carries its own intermediate bounds:
the root's CROWN bounds tightened by alpha-CROWN (:func:`certify.bounds.alpha_crown_bounds`),
clamped by the domain's splits (``l_j := max(l_j, 0)`` or ``u_j := min(u_j, 0)``, so a split
neuron is relaxed exactly), and, for the layers after its newest split, recomputed by CROWN on
the domain's own bounds (``refine_intermediate``).  The splits are enforced in the final bound
by Lagrange multipliers (beta-CROWN): for ``beta >= 0`` the term ``-s_j * beta_j * z_j`` is
non-positive on the domain, so adding it to the objective before the CROWN backward pass keeps
a sound lower bound, and optimizing ``beta`` (with the ReLU lower slopes ``alpha``) tightens
it.  Children start from their parent's alphas and betas.  The alphas and betas are searched
in float32 (``search_float32``); the bound that decides a domain is recomputed with them in
the search's own dtype (float64 by default).

The same search runs inside many input boxes at once (:func:`split_boxes`: each domain names
its box, and each box has its own root bounds), which is how input splitting hands over its
hardest sub-boxes.

Each round of the search (:class:`_Search`) selects a batch of open domains, refines and bounds
them, prunes the proved ones, tries the points their bounds suggest as counterexamples, and
branches the rest: per domain, the unstable unsplit neuron with the largest BaBSR-style score
(the bound lost to the neuron's upper chord).  A domain without unstable neurons left is linear
on its region: an exact LP decides it (:mod:`certify.bab.leaf`), so the search is complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch

from certify.bab.common import Stats, corner_points, domain_cap, holds, undecided, violated
from certify.bab.domains import Pool, SplitDomains
from certify.bab.leaf import decide_leaf
from certify.bab.options import BaBOptions
from certify.bounds import (
    AlphaOptions,
    BackwardContext,
    Bounds,
    LinearBound,
    NodeSlopes,
    adam,
    alpha_crown_layers,
    backward,
    crown_bounds,
    crown_node,
)
from certify.budget import Budget
from certify.falsify import Falsifier, pgd
from certify.network import Network, Node, Op
from certify.problem import Problem
from certify.spec_matrix import PROOF_TOLERANCE, SpecMatrix
from certify.verdict import Counterexample, Verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Layout:
    """The ReLU layers: node, pre-activation node name, size and offset in the flat split vector."""

    relus: tuple[Node, ...]
    pre: tuple[str, ...]
    sizes: tuple[int, ...]
    offsets: tuple[int, ...]

    @staticmethod
    def of(net: Network) -> Layout:
        relus = tuple(n for n in net.nodes if n.op is Op.RELU)
        sizes = tuple(n.size for n in relus)
        offsets = tuple(int(x) for x in np.cumsum((0,) + sizes[:-1]))
        return Layout(relus, tuple(n.inputs[0] for n in relus), sizes, offsets)

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def part(self, flat: torch.Tensor, k: int) -> torch.Tensor:
        """Layer ``k``'s slice of a tensor whose last axis is the flat neuron index."""
        return flat[..., self.offsets[k]:self.offsets[k] + self.sizes[k]]


@dataclass(frozen=True, slots=True)
class Target:
    """What a search works on: the network (in the search's dtype and device), its unsafe rows
    and the checker of candidate counterexamples."""

    net: Network
    spec: SpecMatrix
    falsify: Falsifier


@dataclass(frozen=True, slots=True)
class Root:
    """The bounds every domain of a box starts from (``[NB, ...]`` per node) and the slopes
    alpha-CROWN found for the intermediate ones (empty: refinement uses CROWN's defaults)."""

    bounds: dict[str, Bounds]
    slopes: dict[str, NodeSlopes]


@dataclass(frozen=True, slots=True)
class Bounded:
    """A batch's best bounds: ``lower [B, S]`` of the unsafe rows, their input coefficients
    ``coef [B, S, n_in]`` (in the network's dtype), the BaBSR coefficients at the ReLU outputs
    ``babsr [B, total]``, and the slopes and multipliers that gave them (``[B, S, total]``)."""

    lower: torch.Tensor
    coef: torch.Tensor
    babsr: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor

    def take(self, index: torch.Tensor) -> Bounded:
        return Bounded(self.lower[index], self.coef[index], self.babsr[index], self.alpha[index], self.beta[index])


class Bounder:
    """beta-CROWN lower bounds of the unsafe rows on batches of split domains.

    ``root`` holds the intermediate bounds of one or more input boxes (leading dimension
    ``NB``); each domain names its box, so one search can run inside many boxes.  Alphas and
    betas may be searched in a cheaper dtype (``search``); the bound that decides is then
    recomputed in the network's own dtype with the slopes and multipliers found."""

    def __init__(self, net: Network, spec: SpecMatrix, root: Root, search: torch.dtype | None = None) -> None:
        self.net, self.spec, self.layout = net, spec, Layout.of(net)
        self.root, self.slopes = root.bounds, root.slopes
        self.search = net.dtype if search is None else search
        self.search_net = net if self.search == net.dtype else net.to(dtype=self.search)
        self.search_root = self.root if self.search == net.dtype else {
            k: Bounds(v.lower.to(self.search), v.upper.to(self.search)) for k, v in self.root.items()}
        empty = [self.root[net.input.name].lower.flatten(1)[:, :0]]  # a net without ReLUs: [NB, 0]
        self.l0 = torch.cat([self.root[p].lower.flatten(1) for p in self.layout.pre] or empty, dim=1)
        self.u0 = torch.cat([self.root[p].upper.flatten(1) for p in self.layout.pre] or empty, dim=1)
        users = net.users()
        self.user_ops = [{net.node(u).op for u in users[p]} for p in self.layout.pre]
        self.relu_names = frozenset(r.name for r in self.layout.relus)

    def context(self, lo: torch.Tensor, hi: torch.Tensor, alphas: dict[str, torch.Tensor], box: torch.Tensor,
                ) -> BackwardContext:
        """The bounds a backward pass reads for domains with pre-activation bounds ``lo, hi:
        [B, total]`` in boxes ``box: [B]`` (every other node keeps its box's root bounds, in
        ``lo``'s dtype)."""
        bsz = lo.shape[0]
        root = self.root if lo.dtype == self.net.dtype else self.search_root
        bounds = {k: Bounds(_rows(v.lower, box), _rows(v.upper, box)) for k, v in root.items()}
        for k, (relu, pre) in enumerate(zip(self.layout.relus, self.layout.pre)):
            shape = (bsz, *relu.shape)
            bounds[pre] = Bounds(self.layout.part(lo, k).reshape(shape), self.layout.part(hi, k).reshape(shape))
        return BackwardContext(bounds, alphas)

    def refine(self, d: SplitDomains, budget: Budget | None = None) -> SplitDomains:
        """Each domain's pre-activation bounds of the ReLU layers after its newest split,
        recomputed by CROWN on the domain's own bounds of the layers before, and intersected with
        the bounds it has.  A split neuron is relaxed exactly, so the layers after a split
        tighten; the layers up to it cannot change."""
        lo, hi = d.lo.clone(), d.hi.clone()
        for k in range(1, len(self.layout.relus)):
            sel = (d.after < k).nonzero().flatten()
            if sel.numel() == 0:
                continue
            boxes = d.box[sel]
            ctx = self.context(lo[sel], hi[sel], {}, boxes)
            pre = self.layout.pre[k]
            found = self.slopes.get(pre)
            slopes = None if found is None else partial(found.gather, box=boxes)
            fresh = crown_node(self.net, self.net.node(pre), ctx.bounds, self.user_ops[k], slopes=slopes,
                               budget=budget)
            a, b = self.layout.offsets[k], self.layout.offsets[k] + self.layout.sizes[k]
            lo[sel, a:b] = torch.maximum(lo[sel, a:b], fresh.lower.flatten(1))
            hi[sel, a:b] = torch.minimum(hi[sel, a:b], fresh.upper.flatten(1))
        return replace(d, lo=lo, hi=hi)

    def bound(self, d: SplitDomains, iterations: int, lr: tuple[float, float], budget: Budget) -> Bounded:
        """Optimize the alphas and betas of a batch (warm-started from the domains') by Adam on
        the open rows' lower bounds; returns the best bound per row found, in the network's
        dtype (see the class docstring)."""
        spec, sd = self.spec, self.search
        bsz = len(d)
        c = spec.batch(bsz).to(sd)
        weight = d.open.gather(1, spec.group.unsqueeze(0).expand(bsz, -1)).to(sd)  # [B, S]: open rows
        sign = -d.splits.to(sd).unsqueeze(1)  # [B, 1, total]: -s_j
        alpha = d.alpha.detach().to(sd).clone().requires_grad_(True)
        beta = d.beta.detach().to(sd).clone().requires_grad_(True)
        lo_s, hi_s = d.lo.to(sd), d.hi.to(sd)
        opt = adam([{"params": [alpha], "lr": lr[0]}, {"params": [beta], "lr": lr[1]}], lr=lr[0])
        best: Bounded | None = None
        for it in range(iterations + 1):
            with torch.enable_grad():
                ctx = self.context(lo_s, hi_s, self._alphas(alpha), d.box)
                res = self._pass(self.search_net, ctx, c, self._beta_terms(sign, beta))
            with torch.no_grad():
                best = self._keep_best(best, res, alpha, beta, weight)
                closed = (spec.disjunct_margins(best.lower) > 0) | ~d.open
                if it == iterations or bool(closed.all()) or budget.expired:
                    break
            with torch.enable_grad():
                opt.zero_grad()
                (-(res.lower * weight).sum()).backward()
            with torch.no_grad():
                opt.step()
                alpha.clamp_(0.0, 1.0)
                beta.clamp_(min=0.0)
        assert best is not None
        if sd == self.net.dtype:
            return best
        with torch.no_grad():  # the deciding bound, in the network's dtype
            dt = self.net.dtype
            ctx = self.context(d.lo, d.hi, self._alphas(best.alpha.to(dt)), d.box)
            res = self._pass(self.net, ctx, spec.batch(bsz), self._beta_terms(sign.to(dt), best.beta.to(dt)))
        return replace(best, lower=res.lower, coef=res.A.flatten(2))

    def _keep_best(self, best: Bounded | None, res: LinearBound, alpha: torch.Tensor, beta: torch.Tensor,
                   weight: torch.Tensor) -> Bounded:
        """``best`` updated row by row where ``res`` is better (the BaBSR coefficients per domain)."""
        lower = res.lower.detach()
        if best is None:
            return Bounded(lower, res.A.detach().flatten(2), self._babsr(res, weight), alpha.detach().clone(),
                           beta.detach().clone())
        better = lower > best.lower  # [B, S]
        dom = better.any(dim=1)
        if not bool(dom.any()):
            return best
        rows = better.unsqueeze(-1)
        return Bounded(torch.maximum(best.lower, lower), torch.where(rows, res.A.detach().flatten(2), best.coef),
                       torch.where(dom.unsqueeze(-1), self._babsr(res, weight), best.babsr),
                       torch.where(rows, alpha.detach(), best.alpha), torch.where(rows, beta.detach(), best.beta))

    def _pass(self, net: Network, ctx: BackwardContext, c: torch.Tensor, beta_terms: dict[str, torch.Tensor],
              ) -> LinearBound:
        """The CROWN backward pass of ``c: [B, S, n_out]`` with the split multipliers' terms,
        recording the coefficients at the ReLU outputs (for BaBSR)."""
        c = c.reshape(*c.shape[:2], *net.output_shape)
        return backward(net, net.output, c, ctx, extra=beta_terms, record=self.relu_names)

    def _alphas(self, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
        """The flat lower slopes ``[B, S, total]`` per ReLU node: ``[B, S, *shape]``."""
        bsz = alpha.shape[0]
        return {r.name: self.layout.part(alpha, k).reshape(bsz, -1, *r.shape)
                for k, r in enumerate(self.layout.relus)}

    def _beta_terms(self, sign: torch.Tensor, beta: torch.Tensor) -> dict[str, torch.Tensor]:
        """The split multipliers' terms ``-s_j beta_j`` per pre-activation node: ``[B, S, *shape]``."""
        bsz = beta.shape[0]
        return {p: (self.layout.part(sign, k) * self.layout.part(beta, k)).reshape(bsz, -1, *r.shape)
                for k, (r, p) in enumerate(zip(self.layout.relus, self.layout.pre))}

    def _babsr(self, res: LinearBound, weight: torch.Tensor) -> torch.Tensor:
        """Per neuron, the open rows' coefficient at its ReLU output, summed: ``[B, total]``."""
        bsz = weight.shape[0]
        parts = []
        for r in self.layout.relus:
            a = res.at.get(r.name)
            parts.append(weight.new_zeros(bsz, r.size) if a is None
                         else (a.detach().flatten(2) * weight.unsqueeze(-1)).sum(1))
        return torch.cat(parts, dim=1)


def _rows(t: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Rows ``box`` of ``t`` (a view when ``t`` has one row, i.e. one box)."""
    if t.shape[0] == 1:
        return t.expand(box.shape[0], *t.shape[1:])
    return t.index_select(0, box)


def _clamp(lo: torch.Tensor, hi: torch.Tensor, splits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds ``[B, total]`` with each split applied: ``l_j := max(l_j, 0)`` where ``s_j = +1``,
    ``u_j := min(u_j, 0)`` where ``s_j = -1``."""
    return torch.where(splits > 0, lo.clamp(min=0), lo), torch.where(splits < 0, hi.clamp(max=0), hi)


def choose_neuron(d: SplitDomains, coef: torch.Tensor) -> torch.Tensor:
    """The neuron to split per domain (``-1``: none left): BaBSR's intercept score, the bound
    lost to the upper chord ``-l u / (u - l)`` weighted by the coefficient there, with the
    smaller of ``-l, u`` as a tie-breaker."""
    lo, hi = d.lo, d.hi
    unstable = (lo < 0) & (hi > 0) & (d.splits == 0)
    width = (hi - lo).clamp(min=1e-30)
    intercept = (-lo * hi / width).clamp(min=0)
    score = (-coef).clamp(min=0) * intercept + 1e-4 * coef.abs() * torch.minimum(-lo, hi) + 1e-12 * intercept
    score = torch.where(unstable, score, torch.full_like(score, -1.0))
    best = score.argmax(dim=1)
    none = ~unstable.any(dim=1)
    return torch.where(none, torch.full_like(best, -1), best)


def _attack(falsify: Falsifier, lo: torch.Tensor, hi: torch.Tensor, options: BaBOptions,
            budget: Budget) -> Counterexample | None:
    """PGD with random restarts (and the centre) on the violation margin."""
    restarts, steps = options.relu.attack_restarts, options.relu.attack_steps
    if restarts <= 0 or steps <= 0:
        return None
    gen = torch.Generator(device="cpu").manual_seed(options.seed)
    x = lo + (hi - lo) * torch.rand(restarts, lo.numel(), generator=gen, dtype=lo.dtype).to(lo.device)
    x = torch.cat([x, ((lo + hi) / 2).reshape(1, -1)])
    x, cex = pgd(falsify, lo, hi, x, steps, shrink=0.5, every=10, budget=budget)
    return cex if cex is not None else falsify.search(x)


def relu_split(problem: Problem, options: BaBOptions, budget: Budget) -> Verdict:
    """Decide ``problem`` by batched ReLU splitting (see the module docstring)."""
    dtype, device = options.torch_dtype, budget.device
    net = problem.network.to(dtype=dtype, device=device)
    spec = SpecMatrix.of(problem, dtype, device)
    falsify = Falsifier(problem, net, spec)
    stats = Stats("relu")
    n_in = net.input_size
    lo = torch.as_tensor(np.array(problem.box.lower), dtype=dtype, device=device).reshape(1, n_in)
    hi = torch.as_tensor(np.array(problem.box.upper), dtype=dtype, device=device).reshape(1, n_in)

    cex = falsify.search(torch.cat([lo, hi, (lo + hi) / 2]))
    if cex is None:
        cex = _attack(falsify, lo[0], hi[0], options, budget)
    if cex is not None:
        return violated(stats, cex)
    root = root_bounds(net, lo, hi, options, budget)
    alone = spec.n_groups > 1 and options.relu.joint_share < 1
    joint = budget.share(options.relu.joint_share) if alone else budget
    out = _Search(Target(net, spec, falsify), lo, hi, options, joint, stats, root=root).run()
    if out.counterexample is not None:
        return violated(stats, out.counterexample)
    if not out.reason:
        return holds(stats)
    if not alone or budget.expired:
        return undecided(stats, out.reason)
    # The joint search did not settle it: each disjunct by a search of its own, a single
    # objective with branching chosen for it alone (the unsafe set is their union).
    first = out.reason
    for k in range(spec.n_groups):
        out = _Search(Target(net, spec.disjunct(k), falsify), lo, hi, options, budget, stats, root=root).run()
        if out.counterexample is not None:
            return violated(stats, out.counterexample)
        if out.reason:
            return undecided(stats, f"all disjuncts at once: {first}; disjunct {k + 1} of {spec.n_groups} "
                                    f"alone: {out.reason}")
    return holds(stats)


def root_bounds(net: Network, lo: torch.Tensor, hi: torch.Tensor, options: BaBOptions,
                budget: Budget | None = None) -> Root:
    """CROWN bounds of every node on the boxes ``lo, hi: [NB, n]``, the intermediate ones
    tightened by alpha-CROWN (every domain of a box starts from them)."""
    n_boxes = lo.shape[0]
    root_box = Bounds(lo.reshape(n_boxes, *net.input_shape), hi.reshape(n_boxes, *net.input_shape))
    with torch.no_grad():
        root = crown_bounds(net, root_box, budget=budget)
    if options.relu.intermediate_alpha_iterations <= 0:
        return Root(root, {})
    alpha = AlphaOptions(iterations=options.relu.intermediate_alpha_iterations, lr=options.lr_alpha)
    root, slopes = alpha_crown_layers(net, root_box, alpha, root, budget)
    return Root(root, slopes if options.relu.refine_slopes else {})


@dataclass(frozen=True, slots=True)
class BoxesOutcome:
    """What ReLU splitting inside several input boxes settled: a counterexample (in one of the
    boxes), or which boxes are still open (``[NB]`` bool) and why (empty when none is)."""

    counterexample: Counterexample | None
    open_boxes: torch.Tensor
    reason: str


def split_boxes(target: Target, lo: torch.Tensor, hi: torch.Tensor, options: BaBOptions, budget: Budget,
                stats: Stats) -> BoxesOutcome:
    """ReLU splitting inside the input boxes ``lo, hi: [NB, n]`` at once, with the hand-over
    options (``options.hand_over``): the boxes' domains share the batches, shallowest first; a
    box is proved when none of its domains is left open, and given up (left open) once
    ``hand_over.box_domains`` of its domains have been bounded.  Input splitting hands its
    hardest sub-boxes here."""
    handed = replace(options, relu=options.hand_over.relu, alpha_iterations=options.hand_over.alpha_iterations)
    return _Search(target, lo, hi, handed, budget, stats, box_domains=options.hand_over.box_domains).run()


class _Search:
    """One search: the pool of open split domains and the round that works on a batch of them
    (select, refine, bound, prune, falsify, branch).  With ``box_domains`` (many boxes) the
    shallowest domains go first, so every box gets its first splits before any gets deep ones,
    and a box is given up after that many domains; otherwise the worst-bounded go first.

    Eight parameters: the target, the input boxes (two bounds), the options, the budget and the
    shared counters are all needed; the per-box cap and the root bounds are optional."""

    def __init__(self, target: Target, lo: torch.Tensor, hi: torch.Tensor, options: BaBOptions, budget: Budget,
                 stats: Stats, box_domains: int | None = None, root: Root | None = None) -> None:
        net, spec = target.net, target.spec
        self.net, self.spec, self.falsify, self.lo, self.hi = net, spec, target.falsify, lo, hi
        self.options, self.budget, self.stats, self.box_domains = options, budget, stats, box_domains
        self.exact = Op.MAXPOOL not in net.ops()  # leaves are linear (LP-exact) only without maxpool
        root = root if root is not None else root_bounds(net, lo, hi, options, budget)
        relu = options.relu
        self.bounder = Bounder(net, spec, root, torch.float32 if relu.search_float32 else None)
        self.layout = self.bounder.layout
        n_boxes, rows, total = lo.shape[0], spec.C.shape[0], self.layout.total
        self.store = torch.float32  # alphas and betas are stored compactly; any value in range is sound
        device = lo.device
        b = self.bounder
        first = SplitDomains(
            key=lo.new_full((n_boxes,), -torch.inf), depth=torch.zeros(n_boxes, dtype=torch.long, device=device),
            splits=torch.zeros(n_boxes, total, dtype=torch.int8, device=device),
            box=torch.arange(n_boxes, device=device),
            alpha=(b.u0 >= -b.l0).to(self.store).unsqueeze(1).expand(n_boxes, rows, total),
            beta=torch.zeros(n_boxes, rows, total, dtype=self.store, device=device),
            open=torch.ones(n_boxes, spec.n_groups, dtype=torch.bool, device=device), lo=b.l0, hi=b.u0,
            after=torch.full((n_boxes,), len(self.layout.relus), dtype=torch.long, device=device))
        cap = domain_cap(options, total * (1 + 8 * rows + 2 * lo.element_size()) + 80 + spec.n_groups)
        self.pool: Pool[SplitDomains] = Pool(first, cap)
        self.given_up = torch.zeros(n_boxes, dtype=torch.bool, device=device)  # or undecided
        self.spent = torch.zeros(n_boxes, dtype=torch.long, device=device)
        self.rounds = 0

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
            return self._open(f"{self.stats.undecided} fully split domain(s) not decided by the leaf LP after "
                              f"{self.stats.domains} domains" if self.box_domains is None else
                              f"{int(self.given_up.sum())} box(es) given up or undecided")
        return self._open("")

    def _open(self, reason: str) -> BoxesOutcome:
        left = self.given_up.clone()
        left[self.pool.domains.box] = True
        return BoxesOutcome(None, left, reason)

    def _round(self) -> Counterexample | None:
        """One batch: select, refine, bound, prune, falsify, branch."""
        d = self.pool.pop(self.options.relu.batch_size, shallow_first=self.box_domains is not None)
        iterations = self.options.alpha_iterations if self.rounds == 0 else self.options.relu.beta_iterations
        self.rounds += 1
        self.stats.domains += len(d)
        self.stats.batches += 1
        if self.options.relu.refine_intermediate:
            d = self._refine(d)
            if not len(d):
                return None
        lr = (self.options.lr_alpha, self.options.relu.lr_beta)
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
        unclosed = d.open & ~(self.spec.disjunct_margins(res.lower) > 0)
        todo = unclosed.any(dim=1)
        if self.box_domains is not None:
            todo &= ~self.given_up[d.box]
        sel = todo.nonzero().flatten()
        return d.take(sel), res.take(sel), unclosed[sel]

    def _branch(self, d: SplitDomains, res: Bounded, unclosed: torch.Tensor) -> Counterexample | None:
        """Split each domain on its best neuron into two children; decide fully split leaves."""
        neuron = choose_neuron(d, res.babsr)
        leaf = neuron < 0
        if bool(leaf.any()):
            cex = self._leaves(d.take(leaf), unclosed[leaf])
            if cex is not None:
                return cex
            go = ~leaf
            d, res, unclosed, neuron = d.take(go), res.take(go), unclosed[go], neuron[go]
        if neuron.numel() == 0:
            return None
        r = torch.arange(neuron.numel(), device=neuron.device)
        active, inactive = d.splits.clone(), d.splits.clone()
        active[r, neuron], inactive[r, neuron] = 1, -1
        splits = torch.cat([active, inactive])
        margins = self.spec.disjunct_margins(res.lower)
        key = torch.where(unclosed, margins, torch.full_like(margins, torch.inf)).amin(dim=1)
        starts = torch.tensor(self.layout.offsets, device=neuron.device)
        layer = torch.searchsorted(starts, neuron, right=True) - 1
        lo, hi = _clamp(torch.cat([d.lo, d.lo]), torch.cat([d.hi, d.hi]), splits)
        children = SplitDomains(
            key=torch.cat([key, key]), depth=torch.cat([d.depth + 1, d.depth + 1]), splits=splits,
            box=torch.cat([d.box, d.box]), alpha=torch.cat([res.alpha, res.alpha]).to(self.store),
            beta=torch.cat([res.beta, res.beta]).to(self.store), open=torch.cat([unclosed, unclosed]),
            lo=lo, hi=hi, after=torch.cat([layer, layer]))
        self.pool.push(children)
        self.stats.max_depth = max(self.stats.max_depth, int(children.depth.max()))
        self.stats.max_open = max(self.stats.max_open, len(self.pool))
        return None

    def _leaves(self, d: SplitDomains, unclosed: torch.Tensor) -> Counterexample | None:
        """Fully split domains: linear on their regions, decided by an exact LP."""
        for j in range(len(d)):
            proved, cex = (decide_leaf(self.bounder, self.falsify, d.take(slice(j, j + 1)), unclosed[j])
                           if self.exact and self.options.relu.leaf_lp else (False, None))
            if cex is not None:
                return cex
            if not proved:
                self.stats.undecided += 1
                self.given_up[d.box[j]] = True
        return None
