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

Branching picks, per domain, the unstable unsplit neuron with the largest BaBSR-style score
(the bound lost to the neuron's upper chord).  A domain without unstable neurons left is linear
on its region: an exact LP (scipy's HiGHS) decides it, so the search is complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from certify.bab.common import BaBOptions, Falsifier, Stats, corner_points, domain_cap, holds, undecided, \
    violated
from certify.bounds import CROWN_RULES, AlphaOptions, BackwardContext, Bounds, NodeSlopes, adam, \
    alpha_crown_layers, crown_bounds, crown_node
from certify.budget import Budget
from certify.engines.spec_matrix import PROOF_TOLERANCE, SpecMatrix
from certify.network import Network, Node, Op
from certify.numeric import LP_MAGNITUDE
from certify.problem import Problem
from certify.verdict import Counterexample, Verdict

log = logging.getLogger(__name__)



@dataclass(frozen=True, slots=True)
class _Layout:
    """The ReLU layers: node, pre-activation node name, size and offset in the flat split vector."""

    relus: tuple[Node, ...]
    pre: tuple[str, ...]
    sizes: tuple[int, ...]
    offsets: tuple[int, ...]

    @staticmethod
    def of(net: Network) -> _Layout:
        relus = tuple(n for n in net.nodes if n.op is Op.RELU)
        sizes = tuple(n.size for n in relus)
        offsets = tuple(int(x) for x in np.cumsum((0,) + sizes[:-1]))
        return _Layout(relus, tuple(n.inputs[0] for n in relus), sizes, offsets)

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def part(self, flat: torch.Tensor, k: int) -> torch.Tensor:
        """Layer ``k``'s slice of a tensor whose last axis is the flat neuron index."""
        return flat[..., self.offsets[k]:self.offsets[k] + self.sizes[k]]


class _Bounder:
    """beta-CROWN lower bounds of the unsafe rows on batches of split domains.

    ``root`` holds the intermediate bounds of one or more input boxes (leading dimension ``NB``);
    each domain names its box (``box: [B]``, long), so one search can run inside many boxes."""

    def __init__(self, net: Network, spec: SpecMatrix, root: _Root, layout: _Layout,
                 search: torch.dtype | None = None) -> None:
        self.net, self.spec, self.layout = net, spec, layout
        self.root, self.slopes = root.bounds, root.slopes
        # Alphas and betas may be searched in a cheaper dtype; the bound that decides is then
        # recomputed in the network's own dtype with the slopes and multipliers found.
        self.search = net.dtype if search is None else search
        self.search_net = net if self.search == net.dtype else net.to(dtype=self.search)
        self.search_root = self.root if self.search == net.dtype else {
            k: Bounds(v.lower.to(self.search), v.upper.to(self.search)) for k, v in self.root.items()}
        # Root bounds of the pre-activations, flattened: [NB, total].
        empty = [self.root[net.input.name].lower.flatten(1)[:, :0]]  # a net without ReLUs: [NB, 0]
        self.l0 = torch.cat([self.root[p].lower.flatten(1) for p in layout.pre] or empty, dim=1)
        self.u0 = torch.cat([self.root[p].upper.flatten(1) for p in layout.pre] or empty, dim=1)
        users = net.users()
        self.user_ops = [{net.node(u).op for u in users[p]} for p in layout.pre]

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

    def refine(self, lo: torch.Tensor, hi: torch.Tensor, box: torch.Tensor, after: torch.Tensor,
               budget: Budget | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each domain's pre-activation bounds of the ReLU layers after ``after: [B]`` (the layer
        of its newest split), recomputed by CROWN on the domain's own bounds of the layers
        before, and intersected with the bounds it has.  A split neuron is relaxed exactly, so
        the layers after a split tighten; the layers up to it cannot change."""
        lo, hi = lo.clone(), hi.clone()
        for k in range(1, len(self.layout.relus)):
            sel = (after < k).nonzero().flatten()
            if sel.numel() == 0:
                continue
            boxes = box[sel]
            ctx = self.context(lo[sel], hi[sel], {}, boxes)
            pre = self.layout.pre[k]
            found = self.slopes.get(pre)
            slopes = None if found is None else partial(found.gather, box=boxes)
            fresh = crown_node(self.net, self.net.node(pre), ctx.bounds, self.user_ops[k], slopes=slopes, budget=budget)
            a, b = self.layout.offsets[k], self.layout.offsets[k] + self.layout.sizes[k]
            lo[sel, a:b] = torch.maximum(lo[sel, a:b], fresh.lower.flatten(1))
            hi[sel, a:b] = torch.minimum(hi[sel, a:b], fresh.upper.flatten(1))
        return lo, hi

    def backward(self, net: Network, ctx: BackwardContext, c: torch.Tensor, beta_terms: dict[str, torch.Tensor],
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """CROWN backward pass of ``c: [B, S, n_out]`` through ``net`` (the network or its copy in
        the search dtype) with ``beta_terms[pre]`` added to the coefficients of each
        pre-activation node.  Returns ``lower [B, S]``, the input coefficients ``[B, S, n_in]``
        and the coefficients met at each ReLU output."""
        c = c.reshape(*c.shape[:2], *net.output_shape)
        acc: dict[str, torch.Tensor] = {net.output: c}
        bias = c.new_zeros(c.shape[:2])
        at_relu: dict[str, torch.Tensor] = {}
        for node in reversed(net.nodes[1:]):
            a = acc.pop(node.name, None)
            if a is None:
                continue
            if node.name in beta_terms:
                a = a + beta_terms[node.name]
            if node.op is Op.RELU:
                at_relu[node.name] = a
            a_ins, b = CROWN_RULES[node.op](node, a, ctx)
            bias = bias + b
            for name, a_in in zip(node.inputs, a_ins):
                acc[name] = acc[name] + a_in if name in acc else a_in
        inp = net.input.name
        box = ctx.bounds[inp]
        a_x = acc.get(inp)
        if a_x is None:
            a_x = c.new_zeros(*c.shape[:2], *box.lower.shape[1:])
        if inp in beta_terms:
            a_x = a_x + beta_terms[inp]
        lo, hi = box.lower.unsqueeze(1), box.upper.unsqueeze(1)
        lower = (a_x.clamp(min=0) * lo + a_x.clamp(max=0) * hi).flatten(2).sum(-1) + bias
        return lower, a_x.flatten(2), at_relu

    def bound(self, lo: torch.Tensor, hi: torch.Tensor, splits: torch.Tensor, box: torch.Tensor,
              alpha: torch.Tensor, beta: torch.Tensor,
              open_: torch.Tensor, iterations: int, lr: tuple[float, float], budget: Budget,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Optimize alphas and betas of a batch: pre-activation bounds ``lo, hi [B, total]``,
        ``splits [B, total]`` (int8), ``box [B]``,
        ``alpha, beta [B, S, total]``, ``open_ [B, K]``.

        Returns the best ``lower [B, S]``, input coefficients ``[B, S, n_in]``, the BaBSR
        coefficients at the ReLU outputs ``[B, total]`` and the alphas and betas that gave them.
        The search runs in ``self.search``; the returned bound and input coefficients are those
        of the network's dtype.
        """
        spec, layout, sd = self.spec, self.layout, self.search
        bsz = splits.shape[0]
        c = spec.batch(bsz).to(sd)
        row_open = open_.gather(1, spec.group.unsqueeze(0).expand(bsz, -1))  # [B, S]
        weight = row_open.to(sd)
        sign = -splits.to(sd).unsqueeze(1)  # [B, 1, total]: -s_j
        alpha = alpha.detach().to(sd).clone().requires_grad_(True)
        beta = beta.detach().to(sd).clone().requires_grad_(True)
        lo_s, hi_s = lo.to(sd), hi.to(sd)
        opt = adam([{"params": [alpha], "lr": lr[0]}, {"params": [beta], "lr": lr[1]}], lr=lr[0])
        best = None
        for it in range(iterations + 1):
            with torch.enable_grad():
                alphas = self._alphas(alpha)
                beta_terms = self._beta_terms(sign, beta)
                ctx = self.context(lo_s, hi_s, alphas, box)
                lower, a_x, at_relu = self.backward(self.search_net, ctx, c, beta_terms)
            with torch.no_grad():
                lower_d = lower.detach()
                if best is None:
                    best = [lower_d, a_x.detach(), self._babsr(ctx, at_relu, weight), alpha.detach().clone(),
                            beta.detach().clone()]
                else:
                    better = lower_d > best[0]  # [B, S]
                    dom = better.any(dim=1)
                    if bool(dom.any()):
                        best[0] = torch.maximum(best[0], lower_d)
                        best[1] = torch.where(better.unsqueeze(-1), a_x.detach(), best[1])
                        best[2] = torch.where(dom.unsqueeze(-1), self._babsr(ctx, at_relu, weight), best[2])
                        best[3] = torch.where(better.unsqueeze(-1), alpha.detach(), best[3])
                        best[4] = torch.where(better.unsqueeze(-1), beta.detach(), best[4])
                closed = (spec.disjunct_margins(best[0]) > 0) | ~open_
                if it == iterations or bool(closed.all()) or budget.expired:
                    break
            with torch.enable_grad():
                loss = -(lower * weight).sum()
                opt.zero_grad()
                loss.backward()
            with torch.no_grad():
                opt.step()
                alpha.clamp_(0.0, 1.0)
                beta.clamp_(min=0.0)
        assert best is not None
        if sd != self.net.dtype:
            with torch.no_grad():
                dt = self.net.dtype
                ctx = self.context(lo, hi, self._alphas(best[3].to(dt)), box)
                best[0], best[1], _ = self.backward(self.net, ctx, spec.batch(bsz),
                                                    self._beta_terms(sign.to(dt), best[4].to(dt)))
        return best[0], best[1], best[2], best[3], best[4]

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

    def _babsr(self, ctx: BackwardContext, at_relu: dict[str, torch.Tensor], weight: torch.Tensor) -> torch.Tensor:
        """Per neuron, the open rows' coefficient at its ReLU output, summed: ``[B, total]``."""
        bsz = weight.shape[0]
        parts = []
        for r in self.layout.relus:
            a = at_relu.get(r.name)
            if a is None:
                parts.append(weight.new_zeros(bsz, r.size))
            else:
                parts.append((a.detach().flatten(2) * weight.unsqueeze(-1)).sum(1))
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


def _branch(lo: torch.Tensor, hi: torch.Tensor, splits: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """The neuron to split per domain (``-1``: none left): BaBSR's intercept score, the bound
    lost to the upper chord ``-l u / (u - l)`` weighted by the coefficient there, with the
    smaller of ``-l, u`` as a tie-breaker."""
    unstable = (lo < 0) & (hi > 0) & (splits == 0)
    width = (hi - lo).clamp(min=1e-30)
    intercept = (-lo * hi / width).clamp(min=0)
    score = (-coef).clamp(min=0) * intercept + 1e-4 * coef.abs() * torch.minimum(-lo, hi) + 1e-12 * intercept
    score = torch.where(unstable, score, torch.full_like(score, -1.0))
    best = score.argmax(dim=1)
    none = ~unstable.any(dim=1)
    return torch.where(none, torch.full_like(best, -1), best)


def _attack(net: Network, falsify: Falsifier, lo: torch.Tensor, hi: torch.Tensor, restarts: int, steps: int,
            seed: int, budget: Budget) -> Counterexample | None:
    """PGD with random restarts on the violation margin (the same margin the falsifier checks)."""
    if restarts <= 0 or steps <= 0:
        return None
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(restarts, lo.numel(), generator=gen, dtype=lo.dtype).to(lo.device)
    x = torch.cat([x, ((lo + hi) / 2).reshape(1, -1)])
    step = (hi - lo) / 4
    for k in range(steps):
        if budget.expired:
            break
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            v = falsify.violation(net, x)
            (g,) = torch.autograd.grad(v.sum(), x)
        with torch.no_grad():
            if bool((v < 0).any()):
                cex = falsify.search(x.detach())
                if cex is not None:
                    return cex
            x = torch.minimum(torch.maximum(x - step * g.sign(), lo), hi)
            if k % 10 == 9:
                step = step / 2
    return falsify.search(x.detach())


def _leaf_lp(bounder: _Bounder, falsify: Falsifier, lo: torch.Tensor, hi: torch.Tensor, splits: torch.Tensor,
             box: int, open_: torch.Tensor) -> tuple[bool, Counterexample | None]:
    """Decide one fully split domain exactly: the network is linear on it.

    Returns ``(proved, counterexample)``; ``(False, None)`` when the LP is inconclusive.
    """
    try:
        from scipy.optimize import linprog
    except ImportError:  # pragma: no cover - scipy comes with the [lp] and [dev] extras
        return False, None
    net, spec, layout = bounder.net, bounder.spec, bounder.layout
    splits = splits.unsqueeze(0)
    ctx = bounder.context(lo.unsqueeze(0), hi.unsqueeze(0), {}, torch.tensor([box], device=splits.device))
    box = ctx.bounds[net.input.name]
    n_in = net.input_size
    # Exact linear forms of the split pre-activations and of the unsafe rows.
    a_ub: list[np.ndarray] = []
    b_ub: list[np.ndarray] = []
    for k, (relu, pre) in enumerate(zip(layout.relus, layout.pre)):
        s = layout.part(splits, k)[0]
        idx = (s != 0).nonzero().flatten()
        if idx.numel() == 0:
            continue
        eye = torch.zeros(idx.numel(), relu.size, dtype=box.lower.dtype, device=box.lower.device)
        eye[torch.arange(idx.numel()), idx] = 1.0
        lb = _linear_form(net, pre, eye.reshape(1, idx.numel(), *relu.shape), ctx)
        g, g0 = lb[0].cpu().numpy(), lb[1].cpu().numpy()  # z = g x + g0
        sg = -s[idx].cpu().numpy().astype(np.float64)  # active (s=+1): -z <= 0
        a_ub.append(sg[:, None] * g)
        b_ub.append(-sg * g0)
    out_a, out_b = _linear_form(net, net.output, spec.C.reshape(1, -1, *net.output_shape), ctx)
    out_a, out_b = out_a.cpu().numpy(), out_b.cpu().numpy()
    rhs = spec.b.cpu().numpy()
    group = spec.group.cpu().numpy()
    lo = box.lower.flatten().cpu().numpy()
    hi = box.upper.flatten().cpu().numpy()
    bounds = [(float(a), float(b)) for a, b in zip(lo, hi)] + [(None, None)]
    base_a = np.concatenate(a_ub) if a_ub else np.zeros((0, n_in))
    base_b = np.concatenate(b_ub) if b_ub else np.zeros(0)
    base_a = np.hstack([base_a, np.zeros((base_a.shape[0], 1))])
    data = [base_a, base_b, out_a, out_b, rhs, lo, hi]
    if not all(np.all(np.isfinite(a)) and np.all(np.abs(a) <= LP_MAGNITUDE) for a in data):
        return False, None  # HiGHS reads values past 1e20 as infinite: its answer would mean nothing
    proved = True
    for k in range(spec.n_groups):
        if not bool(open_[k]):
            continue
        rows = np.nonzero(group == k)[0]
        # C_i y - b_i - t <= 0  with  C_i y = out_a_i x + out_b_i
        ra = np.hstack([out_a[rows], -np.ones((rows.size, 1))])
        rb = rhs[rows] - out_b[rows]
        cost = np.zeros(n_in + 1)
        cost[-1] = 1.0
        res = linprog(cost, A_ub=np.vstack([base_a, ra]), b_ub=np.concatenate([base_b, rb]), bounds=bounds,
                      method="highs")
        if res.status == 2:  # infeasible: the domain is empty
            return True, None
        if res.status != 0:
            proved = False
            continue
        t = float(res.x[-1])
        if t > PROOF_TOLERANCE * (1 + float(np.abs(rhs[rows]).max())) + 1e-9:
            continue
        proved = False
        x = torch.as_tensor(res.x[:-1], dtype=box.lower.dtype, device=box.lower.device).reshape(1, -1)
        cex = falsify.search(x)
        if cex is not None:
            return False, cex
    return proved, None


def _linear_form(net: Network, target: str, c: torch.Tensor, ctx: BackwardContext) -> tuple[torch.Tensor, torch.Tensor]:
    """``c . value(target) = A x + bias`` on a region where every ReLU is stable (exact there):
    ``A [S, n_in]``, ``bias [S]``."""
    from certify.bounds import backward

    lb = backward(net, target, c, ctx)
    return lb.A[0].flatten(1), lb.bias[0]


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
        cex = _attack(net, falsify, lo[0], hi[0], options.attack_restarts, options.attack_steps, options.seed,
                      budget)
    if cex is not None:
        return violated(stats, cex)
    root = _root_bounds(net, lo, hi, options, budget)
    alone = spec.n_groups > 1 and options.joint_share < 1
    joint = budget.share(options.joint_share) if alone else budget
    out = _search(net, spec, falsify, lo, hi, options, joint, stats, root=root)
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
        out = _search(net, spec.disjunct(k), falsify, lo, hi, options, budget, stats, root=root)
        if out.counterexample is not None:
            return violated(stats, out.counterexample)
        if out.reason:
            return undecided(stats, f"all disjuncts at once: {first}; disjunct {k + 1} of {spec.n_groups} "
                                    f"alone: {out.reason}")
    return holds(stats)


@dataclass(frozen=True, slots=True)
class _Root:
    """The bounds every domain of a box starts from (``[NB, ...]`` per node) and the slopes
    alpha-CROWN found for the intermediate ones (empty: refinement uses CROWN's defaults)."""

    bounds: dict[str, Bounds]
    slopes: dict[str, NodeSlopes]


def _root_bounds(net: Network, lo: torch.Tensor, hi: torch.Tensor, options: BaBOptions,
                 budget: Budget | None = None) -> _Root:
    """CROWN bounds of every node on the boxes ``lo, hi: [NB, n]``, the intermediate ones
    tightened by alpha-CROWN (every domain of a box starts from them)."""
    n_boxes = lo.shape[0]
    root_box = Bounds(lo.reshape(n_boxes, *net.input_shape), hi.reshape(n_boxes, *net.input_shape))
    with torch.no_grad():
        root = crown_bounds(net, root_box, budget=budget)
    if options.intermediate_alpha_iterations <= 0:
        return _Root(root, {})
    root, slopes = alpha_crown_layers(net, root_box, AlphaOptions(iterations=options.intermediate_alpha_iterations,
                                                                  lr=options.lr_alpha), root, budget)
    return _Root(root, slopes if options.refine_slopes else {})


@dataclass(frozen=True, slots=True)
class BoxesOutcome:
    """What ReLU splitting inside several input boxes settled: a counterexample (in one of the
    boxes), or which boxes are still open (``[NB]`` bool) and why (empty when none is)."""

    counterexample: Counterexample | None
    open_boxes: torch.Tensor
    reason: str


def split_boxes(net: Network, spec: SpecMatrix, falsify: Falsifier, lo: torch.Tensor, hi: torch.Tensor,
                options: BaBOptions, budget: Budget, stats: Stats, box_domains: int) -> BoxesOutcome:
    """ReLU splitting inside the input boxes ``lo, hi: [NB, n]`` at once (the boxes' domains share
    the batches, shallowest first); ``net`` and ``spec`` in ``options``' dtype.  A box is proved
    when none of its domains is left open; a box is given up (left open) once ``box_domains`` of
    its domains have been bounded.  Input splitting hands its hardest sub-boxes here."""
    return _search(net, spec, falsify, lo, hi, options, budget, stats, box_domains=box_domains)


def _search(net: Network, spec: SpecMatrix, falsify: Falsifier, lo: torch.Tensor, hi: torch.Tensor,
            options: BaBOptions, budget: Budget, stats: Stats, box_domains: int | None = None,
            root: _Root | None = None) -> BoxesOutcome:
    """The search shared by :func:`relu_split` and :func:`split_boxes`: batches of the open
    domains with the worst bound first; with ``box_domains`` (many boxes), the shallowest
    first, then the worst, so every box gets its first splits before any box gets deep ones,
    and a box is given up after that many domains.  ``root``: the boxes' bounds, when they
    are already known (:func:`_root_bounds`)."""
    breadth_first = box_domains is not None
    dtype, device = lo.dtype, lo.device
    k_groups, rows = spec.n_groups, spec.C.shape[0]
    n_boxes = lo.shape[0]
    exact = Op.MAXPOOL not in net.ops()  # leaves are linear (LP-exact) only without maxpool
    if root is None:
        root = _root_bounds(net, lo, hi, options, budget)
    layout = _Layout.of(net)
    bounder = _Bounder(net, spec, root, layout, torch.float32 if options.search_float32 else None)
    total = layout.total
    store = torch.float32  # alphas and betas are stored compactly; any value in range is sound
    alpha0 = (bounder.u0 >= -bounder.l0).to(store).unsqueeze(1).expand(n_boxes, rows, total)
    pool = {"splits": torch.zeros(n_boxes, total, dtype=torch.int8, device=device),
            "box": torch.arange(n_boxes, device=device), "alpha": alpha0,
            "beta": torch.zeros(n_boxes, rows, total, dtype=store, device=device),
            "open": torch.ones(n_boxes, k_groups, dtype=torch.bool, device=device),
            "key": lo.new_full((n_boxes,), -torch.inf), "depth": torch.zeros(n_boxes, dtype=torch.long, device=device),
            "lo": bounder.l0, "hi": bounder.u0,
            "after": torch.full((n_boxes,), len(layout.relus), dtype=torch.long, device=device)}
    cap = domain_cap(options, total * (1 + 8 * rows + 2 * lo.element_size()) + 80 + k_groups)
    starts = torch.tensor(layout.offsets, device=device)
    undecided_boxes = torch.zeros(n_boxes, dtype=torch.bool, device=device)  # or given up
    spent = torch.zeros(n_boxes, dtype=torch.long, device=device)
    first = True
    lr = (options.lr_alpha, options.lr_beta)

    def still_open(reason: str) -> BoxesOutcome:
        left = undecided_boxes.clone()
        left[pool["box"]] = True
        return BoxesOutcome(None, left, reason)

    while pool["key"].shape[0]:
        if budget.expired:
            return still_open(f"timeout after {stats.domains} domains, {pool['key'].shape[0]} open")
        n = pool["key"].shape[0]
        size = min(options.relu_batch_size, n)
        if n <= cap // 2 and breadth_first:
            order = torch.argsort(pool["key"])
            idx = order[torch.argsort(pool["depth"][order], stable=True)[:size]]
        elif n <= cap // 2:
            idx = torch.topk(pool["key"], size, largest=False).indices
        else:
            idx = torch.arange(n - size, n, device=device)
        keep = torch.ones(n, dtype=torch.bool, device=device)
        keep[idx] = False
        d = {k: v[idx] for k, v in pool.items()}
        pool = {k: v[keep] for k, v in pool.items()}
        iters = options.alpha_iterations if first else options.beta_iterations
        first = False
        stats.domains += size
        stats.batches += 1
        if options.refine_intermediate:
            d["lo"], d["hi"] = bounder.refine(d["lo"], d["hi"], d["box"], d["after"], budget)
            # Bounds that cross (beyond rounding) mean the splits contradict each other: empty.
            gap = d["lo"] - d["hi"] - PROOF_TOLERANCE * (1 + d["lo"].abs() + d["hi"].abs())
            feasible = ~(gap > 0).any(dim=1)
            if not bool(feasible.all()):
                stats.empty += int((~feasible).sum())
                d = {k: v[feasible] for k, v in d.items()}
                if d["key"].shape[0] == 0:
                    continue
        lower, a_x, coef, alpha, beta = bounder.bound(d["lo"], d["hi"], d["splits"], d["box"],
                                                      d["alpha"].to(dtype), d["beta"].to(dtype), d["open"],
                                                      iters, lr, budget)
        if box_domains is not None:
            spent += torch.bincount(d["box"], minlength=n_boxes)
            over = spent > box_domains
            if bool(over.any()):
                undecided_boxes |= over
                left = ~over[pool["box"]]
                pool = {k: v[left] for k, v in pool.items()}
        dm = spec.disjunct_margins(lower)
        unclosed = d["open"] & ~(dm > 0)
        todo = unclosed.any(dim=1)
        if box_domains is not None:
            todo &= ~undecided_boxes[d["box"]]
        if not bool(todo.any()):
            continue
        sel = todo.nonzero().flatten()
        d = {k: v[sel] for k, v in d.items()}
        lower, a_x, coef, alpha, beta = lower[sel], a_x[sel], coef[sel], alpha[sel], beta[sel]
        unclosed, dm = unclosed[sel], dm[sel]
        cex = falsify.search(corner_points(a_x, lo[d["box"]], hi[d["box"]], spec.group, k_groups, unclosed))
        if cex is not None:
            return BoxesOutcome(cex, still_open("").open_boxes, "")
        neuron = _branch(d["lo"], d["hi"], d["splits"], coef)
        leaf = neuron < 0
        if bool(leaf.any()):
            for j in leaf.nonzero().flatten().tolist():
                proved, cex = (_leaf_lp(bounder, falsify, d["lo"][j], d["hi"][j], d["splits"][j], int(d["box"][j]),
                                        unclosed[j])
                               if exact and options.leaf_lp else (False, None))
                if cex is not None:
                    return BoxesOutcome(cex, still_open("").open_boxes, "")
                if not proved:
                    stats.undecided += 1
                    undecided_boxes[d["box"][j]] = True
            go = ~leaf
            d = {k: v[go] for k, v in d.items()}
            alpha, beta, unclosed, dm, neuron = alpha[go], beta[go], unclosed[go], dm[go], neuron[go]
        if neuron.numel() == 0:
            continue
        r = torch.arange(neuron.numel(), device=device)
        active = d["splits"].clone()
        active[r, neuron] = 1
        inactive = d["splits"].clone()
        inactive[r, neuron] = -1
        key = torch.where(unclosed, dm, torch.full_like(dm, torch.inf)).amin(dim=1)
        depth = d["depth"] + 1
        splits = torch.cat([active, inactive])
        layer = torch.searchsorted(starts, neuron, right=True) - 1
        c_lo, c_hi = _clamp(torch.cat([d["lo"], d["lo"]]), torch.cat([d["hi"], d["hi"]]), splits)
        children = {"splits": splits, "box": torch.cat([d["box"], d["box"]]),
                    "alpha": torch.cat([alpha, alpha]).to(store), "beta": torch.cat([beta, beta]).to(store),
                    "open": torch.cat([unclosed, unclosed]), "key": torch.cat([key, key]),
                    "depth": torch.cat([depth, depth]), "lo": c_lo, "hi": c_hi, "after": torch.cat([layer, layer])}
        pool = {k: torch.cat([v, children[k]]) for k, v in pool.items()}
        stats.max_depth = max(stats.max_depth, int(depth.max()))
        stats.max_open = max(stats.max_open, pool["key"].shape[0])
        if pool["key"].shape[0] > cap:
            return still_open(f"domain cap {cap} reached after {stats.domains} domains, "
                              f"{pool['key'].shape[0]} open")
    if bool(undecided_boxes.any()):
        return still_open(f"{stats.undecided} fully split domain(s) not decided by the leaf LP "
                          f"after {stats.domains} domains" if box_domains is None else
                          f"{int(undecided_boxes.sum())} box(es) given up or undecided")
    return still_open("")
