"""The bounds of neuron-split domains: the layout of the split neurons (:class:`Layout`), the
root bounds every domain starts from (:class:`Root`), and the :class:`Bounder` that refines a
batch of domains' intermediate bounds after their newest splits and optimizes their alphas and
betas (beta-CROWN), the deciding bound recomputed in the search's dtype.  See
:mod:`certify.bab.neuron_split` for the search around it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch

from certify.bab.domains import SplitDomains
from certify.bounds import BackwardContext, Bounds, LinearBound, NodeSlopes, adam, backward, crown_node
from certify.budget import Budget
from certify.falsify import Falsifier
from certify.network import ACTIVATIONS, Network, Node, Op
from certify.spec_matrix import SpecMatrix


@dataclass(frozen=True, slots=True)
class Layout:
    """The splittable neurons: the elementwise activation nodes, their pre-activation node names,
    sizes and offsets in the flat neuron vector."""

    acts: tuple[Node, ...]
    pre: tuple[str, ...]
    sizes: tuple[int, ...]
    offsets: tuple[int, ...]

    @staticmethod
    def of(net: Network) -> Layout:
        acts = tuple(n for n in net.nodes if n.op in ACTIVATIONS)
        sizes = tuple(n.size for n in acts)
        offsets = tuple(int(x) for x in np.cumsum((0,) + sizes[:-1]))
        return Layout(acts, tuple(n.inputs[0] for n in acts), sizes, offsets)

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def relus(self) -> tuple[Node, ...]:
        return tuple(n for n in self.acts if n.op is Op.RELU)

    def part(self, flat: torch.Tensor, k: int) -> torch.Tensor:
        """Layer ``k``'s slice of a tensor whose last axis is the flat neuron index."""
        return flat[..., self.offsets[k]:self.offsets[k] + self.sizes[k]]

    def is_relu(self, device: torch.device | str) -> torch.Tensor:
        """``[total]`` bool: which neurons are ReLUs."""
        return torch.cat([torch.full((s,), a.op is Op.RELU, dtype=torch.bool, device=device)
                          for a, s in zip(self.acts, self.sizes)] or [torch.zeros(0, dtype=torch.bool)])


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
    ``coef [B, S, n_in]`` (in the network's dtype), the coefficients the open rows put on each
    activation's output ``at [B, total]`` (for branching), and the slopes and multipliers that
    gave them (``[B, S, total]``)."""

    lower: torch.Tensor
    coef: torch.Tensor
    at: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor

    def take(self, index: torch.Tensor) -> Bounded:
        return Bounded(self.lower[index], self.coef[index], self.at[index], self.alpha[index], self.beta[index])


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
        empty = [self.root[net.input.name].lower.flatten(1)[:, :0]]  # a net without activations: [NB, 0]
        self.l0 = torch.cat([self.root[p].lower.flatten(1) for p in self.layout.pre] or empty, dim=1)
        self.u0 = torch.cat([self.root[p].upper.flatten(1) for p in self.layout.pre] or empty, dim=1)
        users = net.users()
        self.user_ops = [{net.node(u).op for u in users[p]} for p in self.layout.pre]
        self.act_names = frozenset(a.name for a in self.layout.acts)

    def context(self, lo: torch.Tensor, hi: torch.Tensor, alphas: dict[str, torch.Tensor], box: torch.Tensor,
                ) -> BackwardContext:
        """The bounds a backward pass reads for domains with pre-activation bounds ``lo, hi:
        [B, total]`` in boxes ``box: [B]`` (every other node keeps its box's root bounds, in
        ``lo``'s dtype)."""
        bsz = lo.shape[0]
        root = self.root if lo.dtype == self.net.dtype else self.search_root
        bounds = {k: Bounds(domain_rows(v.lower, box), domain_rows(v.upper, box)) for k, v in root.items()}
        for k, (act, pre) in enumerate(zip(self.layout.acts, self.layout.pre)):
            shape = (bsz, *act.shape)
            bounds[pre] = Bounds(self.layout.part(lo, k).reshape(shape), self.layout.part(hi, k).reshape(shape))
        return BackwardContext(bounds, alphas)

    def refine(self, d: SplitDomains, budget: Budget | None = None) -> SplitDomains:
        """Each domain's pre-activation bounds of the layers after its newest split, recomputed
        by CROWN on the domain's own bounds of the layers before, and intersected with the
        bounds it has.  A split neuron is relaxed on its smaller interval (a ReLU exactly), so
        the layers after a split tighten; the layers up to it cannot change."""
        lo, hi = d.lo.clone(), d.hi.clone()
        for k in range(1, len(self.layout.acts)):
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
        sign, point = -d.splits.to(sd).unsqueeze(1), split_points(d).to(sd).unsqueeze(1)  # [B, 1, total]
        alpha = d.alpha.detach().to(sd).clone().requires_grad_(True)
        beta = d.beta.detach().to(sd).clone().requires_grad_(True)
        lo_s, hi_s = d.lo.to(sd), d.hi.to(sd)
        opt = adam([{"params": [alpha], "lr": lr[0]}, {"params": [beta], "lr": lr[1]}], lr=lr[0])
        best: Bounded | None = None
        for it in range(iterations + 1):
            with torch.enable_grad():
                ctx = self.context(lo_s, hi_s, self._alphas(alpha), d.box)
                res = self._pass(self.search_net, ctx, c, sign, point, beta)
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
            res = self._pass(self.net, ctx, spec.batch(bsz), sign.to(dt), point.to(dt), best.beta.to(dt))
        return replace(best, lower=res.lower, coef=res.A.flatten(2))

    def _keep_best(self, best: Bounded | None, res: LinearBound, alpha: torch.Tensor, beta: torch.Tensor,
                   weight: torch.Tensor) -> Bounded:
        """``best`` updated row by row where ``res`` is better (the branching coefficients per domain)."""
        lower = res.lower.detach()
        if best is None:
            return Bounded(lower, res.A.detach().flatten(2), self._at(res, weight), alpha.detach().clone(),
                           beta.detach().clone())
        better = lower > best.lower  # [B, S]
        dom = better.any(dim=1)
        if not bool(dom.any()):
            return best
        rows = better.unsqueeze(-1)
        return Bounded(torch.maximum(best.lower, lower), torch.where(rows, res.A.detach().flatten(2), best.coef),
                       torch.where(dom.unsqueeze(-1), self._at(res, weight), best.at),
                       torch.where(rows, alpha.detach(), best.alpha), torch.where(rows, beta.detach(), best.beta))

    def _pass(self, net: Network, ctx: BackwardContext, c: torch.Tensor, sign: torch.Tensor, point: torch.Tensor,
              beta: torch.Tensor) -> LinearBound:
        """The CROWN backward pass of ``c: [B, S, n_out]`` with the split multipliers' terms
        ``-s_j beta_j (z_j - p_j)`` (coefficients on the pre-activations, the constants added to
        the bound), recording the coefficients at the activations' outputs (for branching)."""
        c = c.reshape(*c.shape[:2], *net.output_shape)
        bsz = beta.shape[0]
        terms = {p: (self.layout.part(sign, k) * self.layout.part(beta, k)).reshape(bsz, -1, *a.shape)
                 for k, (a, p) in enumerate(zip(self.layout.acts, self.layout.pre))}
        res = backward(net, net.output, c, ctx, extra=terms, record=self.act_names)
        shift = -(sign * beta * point).sum(-1)  # [B, S]: the constants -(-s beta)(-p) summed
        return replace(res, lower=res.lower + shift, bias=res.bias + shift)

    def _alphas(self, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
        """The flat lower slopes ``[B, S, total]`` per ReLU node: ``[B, S, *shape]``."""
        bsz = alpha.shape[0]
        return {a.name: self.layout.part(alpha, k).reshape(bsz, -1, *a.shape)
                for k, a in enumerate(self.layout.acts) if a.op is Op.RELU}

    def _at(self, res: LinearBound, weight: torch.Tensor) -> torch.Tensor:
        """Per neuron, the open rows' coefficient at its activation's output, summed: ``[B, total]``."""
        bsz = weight.shape[0]
        parts = []
        for a in self.layout.acts:
            coef = res.at.get(a.name)
            parts.append(weight.new_zeros(bsz, a.size) if coef is None
                         else (coef.detach().flatten(2) * weight.unsqueeze(-1)).sum(1))
        return torch.cat(parts, dim=1)


def domain_rows(t: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Rows ``box`` of ``t`` (a view when ``t`` has one row, i.e. one box)."""
    if t.shape[0] == 1:
        return t.expand(box.shape[0], *t.shape[1:])
    return t.index_select(0, box)


def split_points(d: SplitDomains) -> torch.Tensor:
    """The point of each neuron's newest split: its interval's lower end for an upper child
    (``s = +1``), the upper end for a lower child (``-1``), 0 where unsplit: ``[B, total]``."""
    return torch.where(d.splits > 0, d.lo, torch.where(d.splits < 0, d.hi, torch.zeros_like(d.lo)))
