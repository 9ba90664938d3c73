"""Batched input splitting: domains are sub-boxes ``[B, n]`` of the (flattened) input box.

Each batch is bounded with CROWN intermediate bounds and a CROWN (or alpha-CROWN) objective.
Sub-boxes that bound does not prove and that still have many unstable ReLUs get their
intermediate bounds tightened by alpha-CROWN (slopes searched in float32, the bound computed in
float64); their children inherit those bounds, so one tightening serves a whole subtree (ACAS Xu
4_7 prop_1: proved with under 1,000 sub-boxes in about 15 s, where plain CROWN left 7,000 of
112,000 open after 200 s).

Sub-boxes still unproved at depth ``relu_depth`` (12) with few unstable ReLUs are handed to
ReLU splitting (beta-CROWN) inside each box, many boxes per batch
(:func:`certify.bab.relu_split.split_boxes`); boxes it does not settle within a few dozen
domains come back and are handed again a few depths further down.  ACAS Xu's prop_2 on 3_3
and 4_2 needed this: their open sub-boxes crowd a thin slab where the property holds by
about 0.003, which halving boxes approaches very slowly and one or two ReLU splits settle.

A domain is proved when every unsafe disjunct has a row whose lower bound is positive.  The
minimizers of the linear bounds (box corners chosen by the signs of the input coefficients)
and the box centres are tried as counterexamples in the same pass.  Unproved domains are cut
in two along the dimension with the largest ``|A_i| * width_i`` ("smart" branching).

Sound for any network CROWN supports; complete for piecewise-linear networks (small enough
boxes make every ReLU stable, where CROWN is exact).  Disjuncts proved on a domain stay
proved on its children.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch

from certify.bab.common import (BaBOptions, Falsifier, Stats, corner_points, domain_cap, holds, pgd_points,
                                 undecided, violated)
from certify.bounds import (RELAXED_OPS, AlphaOptions, Bounds, alpha_crown_bounds, alpha_crown_objective, crown_bounds,
                            crown_objective, ibp, ibp_objective)
from certify.budget import Budget
from certify.engines.spec_matrix import SpecMatrix
from certify.network import Network
from certify.problem import Problem
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
#: ReLU-splitting options for sub-boxes handed over (see :func:`_relu_phase`): lighter than
#: ReLU mode's defaults, since a handed box is small (ACAS Xu 3_3 prop_2, six open boxes at depth
#: 13-14 one at a time: all proved in 1.8 s with these, 3.5 s for six others with the defaults;
#: without tightening the intermediate bounds two of six stayed open after 5 s), and wider
#: batches, since many boxes share them.
HANDED_BOX_OPTIONS = {"intermediate_alpha_iterations": 5, "alpha_iterations": 10, "beta_iterations": 10,
                      "relu_batch_size": 256}


class _Pool:
    """Open sub-boxes as stacked tensors (one row per domain, same fields for all).

    Best-first (lowest ``key``, the parent's worst open margin) below half the cap, depth
    first (newest first) above it.
    """

    def __init__(self, fields: dict[str, torch.Tensor], cap: int) -> None:
        self.fields = fields
        self.cap = cap

    def __len__(self) -> int:
        return self.fields["key"].shape[0]

    def pop(self, size: int) -> dict[str, torch.Tensor]:
        n = len(self)
        size = min(size, n)
        key = self.fields["key"]
        if n > self.cap // 2:  # depth first: the newest domains, slices without copies
            out = {k: v[n - size:] for k, v in self.fields.items()}
            self.fields = {k: v[:n - size] for k, v in self.fields.items()}
            return out
        idx = torch.topk(key, size, largest=False).indices
        keep = torch.ones(n, dtype=torch.bool, device=key.device)
        keep[idx] = False
        out = {k: v[idx] for k, v in self.fields.items()}
        self.fields = {k: v[keep] for k, v in self.fields.items()}
        return out

    def push(self, fields: dict[str, torch.Tensor]) -> None:
        self.fields = {k: torch.cat([v, fields[k]]) for k, v in self.fields.items()}


def relaxed_inputs(net: Network) -> list[str]:
    """Names of the nodes whose bounds CROWN's relaxations read (inputs of ReLU, maxpool...)."""
    ops = {n.name: n.op for n in net.nodes}
    users = net.users()
    return [n.name for n in net.nodes[1:] if any(ops[u] in RELAXED_OPS for u in users[n.name])]


def box_bounds(net: Network, box: Bounds, relaxed: list[str], known: torch.Tensor | None,
               refresh: bool, method: str = "crown", tighten: AlphaOptions | None = None,
               budget: Budget | None = None) -> tuple[dict[str, Bounds], torch.Tensor]:
    """Bounds of every node on a batch of boxes: recomputed (``method`` ``crown``: CROWN on each
    domain's unstable neurons, see :func:`certify.bounds.crown_bounds`; ``forward``: forward
    linear bounds) when ``refresh``, else IBP; either way intersected with the ``known``
    bounds of the ``relaxed`` nodes (inherited from a parent box, which contains the child).

    ``known: [B, 2, m]`` stacks lower and upper bounds of the relaxed nodes (flattened, in
    order); the same layout is returned for the children to inherit.
    """
    fixed: dict[str, Bounds] = {}
    if known is not None and known.shape[2]:
        offset = 0
        for name in relaxed:
            size = net.node(name).size
            part = known[:, :, offset:offset + size]
            shape = (part.shape[0], *net.node(name).shape)
            fixed[name] = Bounds(part[:, 0].reshape(shape), part[:, 1].reshape(shape))
            offset += size
    if refresh:  # the parent's bounds still hold on the child box: intersect them in
        out = crown_bounds(net, box, fixed or None, method=method, budget=budget)
    else:
        out = ibp(net, box, fixed)
    if tighten is not None:
        out = alpha_crown_bounds(net, box, tighten, bounds=out, budget=budget)
    flat = [torch.stack([out[name].lower.flatten(1), out[name].upper.flatten(1)], dim=1) for name in relaxed]
    stacked = torch.cat(flat, dim=2) if flat else box.lower.new_zeros(box.lower.shape[0], 2, 0)
    return out, stacked


def bound_boxes(net: Network, spec: SpecMatrix, lo: torch.Tensor, hi: torch.Tensor,
                iterations: int = 0, lr: float = 0.25, open_: torch.Tensor | None = None,
                known: torch.Tensor | None = None, refresh: bool = True, method: str = "crown",
                tighten: AlphaOptions | None = None, budget: Budget | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower bounds of every unsafe row on each box, their input coefficients and the
    intermediate bounds used (see :func:`box_bounds`).

    ``lo, hi: [B, n]`` (flat) -> ``lower: [B, S]``, ``A: [B, S, n]``, ``[B, 2, m]``.
    """
    bsz = lo.shape[0]
    shape = net.input_shape
    box = Bounds(lo.reshape(bsz, *shape), hi.reshape(bsz, *shape))
    c = spec.batch(bsz)
    with torch.no_grad():
        bounds, stacked = box_bounds(net, box, relaxed_inputs(net), known, refresh, method, tighten, budget)
        if budget is not None and budget.expired:  # no time for a backward pass: intervals
            return ibp_objective(net, bounds, c), c.new_zeros(bsz, c.shape[1], lo.shape[1]), stacked
        if iterations <= 0:
            best = crown_objective(net, bounds, c)
        else:
            def stop(lower: torch.Tensor) -> bool:
                closed = spec.disjunct_margins(lower) > 0
                if open_ is not None:
                    closed = closed | ~open_
                return bool(closed.all())

            best, _ = alpha_crown_objective(net, bounds, c, AlphaOptions(iterations=iterations, lr=lr),
                                            stop=stop, budget=budget)
    return best.lower.detach(), best.A.detach().flatten(2), stacked


def _branch_dims(options: BaBOptions, spec: SpecMatrix, lower: torch.Tensor, A: torch.Tensor,
                 width: torch.Tensor, root_width: torch.Tensor, unclosed: torch.Tensor) -> torch.Tensor:
    """The dimension to split per domain: ``[B]`` (long).

    ``smart``: largest ``sum_k |A_{r_k, i}| * width_i`` over the still-open disjuncts ``k``,
    ``r_k`` being the row of ``k`` with the best margin (the one closest to proving it);
    ``widest``: the widest dimension relative to the root box.  (Predicting each child's margin
    from the linear bound, abCROWN's "sb", made ACAS Xu trees about twice as large here.)
    """
    rel = width / root_width.clamp(min=1e-30)
    splittable = rel > MIN_RELATIVE_WIDTH
    if options.branching == "widest":
        score = rel.clone()
    else:
        m = spec.margins(lower)  # [B, S]
        dm = spec.disjunct_margins(lower)  # [B, K]
        best_row = m >= dm.gather(1, spec.group.unsqueeze(0).expand_as(m))
        weight = (best_row & unclosed.gather(1, spec.group.unsqueeze(0).expand_as(m))).to(A.dtype)
        score = torch.einsum("bs,bsn->bn", weight, A.abs()) * width
        score = score + 1e-9 * rel * score.amax(dim=1, keepdim=True).clamp(min=1e-30) + 1e-30 * rel
    score = torch.where(splittable, score, torch.full_like(score, -1.0))
    pick = score.argmax(dim=1)
    if options.branching == "widest":
        return pick
    widest = rel.argmax(dim=1)
    rows = torch.arange(pick.shape[0], device=pick.device)
    lagging = rel[rows, widest] > MAX_WIDTH_RATIO * rel[rows, pick]
    return torch.where(lagging, widest, pick)


def input_split(problem: Problem, options: BaBOptions, budget: Budget) -> Verdict:
    """Decide ``problem`` by batched input splitting (see the module docstring)."""
    dtype, device = options.torch_dtype, budget.device
    net = problem.network.to(dtype=dtype, device=device)
    spec = SpecMatrix.of(problem, dtype, device)
    falsify = Falsifier(problem, net, spec)
    stats = Stats("input")
    n, k = net.input_size, spec.n_groups
    lo = torch.as_tensor(np.array(problem.box.lower), dtype=dtype, device=device).reshape(1, n)
    hi = torch.as_tensor(np.array(problem.box.upper), dtype=dtype, device=device).reshape(1, n)
    root_width = (hi - lo)[0]
    itemsize = torch.finfo(dtype).bits // 8
    m = sum(net.node(name).size for name in relaxed_inputs(net))
    cap = domain_cap(options, (2 * n + 2 * m + 2) * itemsize + k + 8)
    complete = problem.network.is_piecewise_linear

    cex = falsify.search(torch.cat([lo, hi, (lo + hi) / 2]))
    if cex is not None:
        return violated(stats, cex)
    fuzz_turn = FuzzTurns(share=0.1)

    # The root: CROWN intermediate bounds (tightened by alpha-CROWN), alpha-CROWN objective.
    lower, A, known = bound_boxes(net, spec, lo, hi, options.alpha_iterations, options.lr_alpha,
                                  tighten=_tightening(options), budget=budget)
    if options.intermediate == "forward":
        known = known[:, :, :0]  # cheap bounds on huge trees: inheriting costs more than it saves
    stats.domains += 1
    pool = _Pool({"lo": lo, "hi": hi, "open": torch.ones(1, k, dtype=torch.bool, device=device),
                  "key": lo.new_full((1,), -torch.inf), "depth": torch.zeros(1, dtype=torch.long, device=device),
                  "known": known}, cap)
    pending: dict[str, torch.Tensor] | None = {"lo": lo, "hi": hi, "lower": lower, "A": A, "known": known,
                                                "open": pool.fields["open"], "depth": pool.fields["depth"]}
    pool.pop(1)
    while pending is not None or len(pool):
        if budget.expired:
            return undecided(stats, f"timeout after {stats.domains} domains, {len(pool)} open"
                             + ("" if complete else " (input splitting is incomplete for non-PL nets)"))
        if pending is None:
            pending = _bound_batch(net, spec, options, pool.pop(options.batch_size), stats, budget)
        d, pending = pending, None
        dm = spec.disjunct_margins(d["lower"])
        unclosed = d["open"] & ~(dm > 0)
        todo = unclosed.any(dim=1)
        if not bool(todo.any()):
            continue
        d = {key: v[todo] for key, v in d.items()}
        unclosed, dm = unclosed[todo], dm[todo]
        handed = _handed(options, d)
        if bool(handed.any()):
            keep, cex = _relu_phase(net, spec, falsify, options, d, handed, budget, stats)
            if cex is not None:
                return violated(stats, cex)
            d = {key: v[keep] for key, v in d.items()}
            unclosed, dm = unclosed[keep], dm[keep]
            if not bool(keep.any()):
                continue
        corners = corner_points(d["A"], d["lo"], d["hi"], spec.group, k, unclosed)
        cex = falsify.search(corners)
        if cex is None and fuzz_turn.due():
            cex = fuzz_turn.run(problem, budget)
        if cex is None:
            # A short PGD inside the most promising domains (those closest to a violation).
            top = torch.argsort(dm.amin(dim=1))[:PGD_DOMAINS]
            starts = (d["lo"][top] + d["hi"][top]) / 2
            cex = falsify.search(pgd_points(falsify, d["lo"][top], d["hi"][top], starts))
        if cex is not None:
            return violated(stats, cex)
        width = d["hi"] - d["lo"]
        dims = _branch_dims(options, spec, d["lower"], d["A"], width, root_width, unclosed)
        rows = torch.arange(dims.shape[0], device=device)
        can = (width[rows, dims] / root_width[dims].clamp(min=1e-30)) > MIN_RELATIVE_WIDTH
        if not bool(can.all()):
            stats.undecided += int((~can).sum())
            d = {key: v[can] for key, v in d.items()}
            unclosed, dm, dims = unclosed[can], dm[can], dims[can]
            rows = torch.arange(dims.shape[0], device=device)
        b_lo, b_hi = d["lo"], d["hi"]
        mid = (b_lo[rows, dims] + b_hi[rows, dims]) / 2
        left_hi = b_hi.clone()
        left_hi[rows, dims] = mid
        right_lo = b_lo.clone()
        right_lo[rows, dims] = mid
        key = torch.where(unclosed, dm, torch.full_like(dm, torch.inf)).amin(dim=1)
        depth = d["depth"] + 1
        pool.push({"lo": torch.cat([b_lo, right_lo]), "hi": torch.cat([left_hi, b_hi]),
                   "open": torch.cat([unclosed, unclosed]), "key": torch.cat([key, key]),
                   "depth": torch.cat([depth, depth]), "known": torch.cat([d["known"], d["known"]])})
        if depth.numel():
            stats.max_depth = max(stats.max_depth, int(depth.max()))
        stats.max_open = max(stats.max_open, len(pool))
        if len(pool) > cap:
            return undecided(stats, f"domain cap {cap} reached after {stats.domains} domains, "
                             f"{len(pool)} open")
    if stats.undecided:
        return undecided(stats, f"{stats.undecided} sub-box(es) at minimal width neither proved nor "
                         f"falsified after {stats.domains} domains")
    return holds(stats)


def _unstable(known: torch.Tensor) -> torch.Tensor:
    """Unstable ReLUs per domain from its stacked intermediate bounds ``known: [B, 2, m]``: ``[B]``."""
    return ((known[:, 0] < 0) & (known[:, 1] > 0)).sum(dim=1)


def _handed(options: BaBOptions, d: dict[str, torch.Tensor]) -> torch.Tensor:
    """Domains to hand to ReLU splitting (see :class:`~certify.bab.common.BaBOptions`): ``[B]`` bool."""
    depth = d["depth"]
    if options.relu_depth <= 0:
        return torch.zeros_like(depth, dtype=torch.bool)
    return ((depth >= options.relu_depth) & ((depth - options.relu_depth) % options.relu_every == 0)
            & (_unstable(d["known"]) <= options.relu_max_unstable))


def _relu_phase(net: Network, spec: SpecMatrix, falsify: Falsifier, options: BaBOptions,
                d: dict[str, torch.Tensor], handed: torch.Tensor, budget: Budget, stats: Stats,
                ) -> tuple[torch.Tensor, Counterexample | None]:
    """ReLU splitting (beta-CROWN) inside the ``handed`` sub-boxes, all at once, for at most
    ``relu_seconds`` per box.  Returns which domains stay open and a counterexample if one was
    found."""
    from certify.bab.relu_split import split_boxes

    idx = handed.nonzero().flatten()
    sub_options = dataclasses.replace(options, **HANDED_BOX_OPTIONS)
    deadline = min(budget.deadline, time.monotonic() + options.relu_seconds * idx.numel())
    out = split_boxes(net, spec, falsify, d["lo"][idx], d["hi"][idx], sub_options, Budget(deadline, budget.device),
                      stats, options.relu_box_domains)
    keep = torch.ones_like(handed)
    keep[idx] = out.open_boxes
    stats.relu_boxes += idx.numel()
    stats.relu_proved += int((~out.open_boxes).sum())
    return keep, out.counterexample


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
        from certify.engines.fuzz import make_engine as make_fuzz

        t0 = time.monotonic()
        self.turns += 1
        seconds = min(self.slice, max(0.0, budget.remaining))
        verdict = make_fuzz({"seed": 1000 + self.turns}).check(problem, Budget(time.monotonic() + seconds,
                                                                               budget.device))
        self.spent += time.monotonic() - t0
        return verdict.counterexample if verdict.status is Status.VIOLATED else None


def _bound_batch(net: Network, spec: SpecMatrix, options: BaBOptions, d: dict[str, torch.Tensor],
                 stats: Stats, budget: Budget) -> dict[str, torch.Tensor]:
    """Bound a batch of popped domains.

    ``intermediate``: ``crown`` recomputes CROWN intermediate bounds for every domain;
    ``reuse`` only intersects the parent's with IBP; ``two-stage`` does ``reuse`` first and
    recomputes CROWN for the domains that bound did not prove.  Then, with
    ``tighten_iterations``, the domains still unproved (with at least ``tighten_unstable``
    unstable ReLUs, at every ``tighten_every``-th depth) get their intermediate bounds
    tightened by alpha-CROWN, which their children inherit.
    """
    mode = options.intermediate
    lower, A, known = bound_boxes(net, spec, d["lo"], d["hi"], options.branch_alpha_iterations,
                                  options.lr_alpha, d["open"], d["known"], refresh=mode in ("crown", "forward"),
                                  method=mode, budget=budget)
    stats.domains += d["lo"].shape[0]
    stats.batches += 1
    if mode == "forward":
        known = known[:, :, :0]  # cheap bounds on huge trees: inheriting costs more than it saves
    out = {"lo": d["lo"], "hi": d["hi"], "lower": lower, "A": A, "known": known, "open": d["open"],
           "depth": d["depth"]}
    if mode == "two-stage":
        out = _rebound(net, spec, options, out, _unproved(spec, out), None, budget)
    if options.tighten_iterations > 0 and mode != "forward":
        pick = (_unproved(spec, out) & (_unstable(out["known"]) >= options.tighten_unstable)
                & (out["depth"] % options.tighten_every == 0))
        out = _rebound(net, spec, options, out, pick, _tightening(options), budget)
        stats.tightened += int(pick.sum())
    return out


def _tightening(options: BaBOptions) -> AlphaOptions | None:
    """The alpha-CROWN options that tighten intermediate bounds (None: no tightening)."""
    if options.tighten_iterations <= 0:
        return None
    return AlphaOptions(iterations=options.tighten_iterations, lr=options.lr_tighten,
                        search_dtype=torch.float32 if options.tighten_float32 else None)


def _unproved(spec: SpecMatrix, d: dict[str, torch.Tensor]) -> torch.Tensor:
    """Domains with an open disjunct their bound did not rule out: ``[B]`` (bool)."""
    return (d["open"] & ~(spec.disjunct_margins(d["lower"]) > 0)).any(dim=1)


def _rebound(net: Network, spec: SpecMatrix, options: BaBOptions, d: dict[str, torch.Tensor],
             pick: torch.Tensor, tighten: AlphaOptions | None, budget: Budget) -> dict[str, torch.Tensor]:
    """Bound the ``pick``ed domains again, from their current intermediate bounds: recomputed
    by CROWN (``tighten`` None) or tightened by alpha-CROWN."""
    if not bool(pick.any()):
        return d
    idx = pick.nonzero().flatten()
    lower, A, known = bound_boxes(net, spec, d["lo"][idx], d["hi"][idx], options.branch_alpha_iterations,
                                  options.lr_alpha, d["open"][idx], d["known"][idx], refresh=tighten is None,
                                  tighten=tighten, budget=budget)
    # A disjunct the first bound ruled out stays closed; branching follows the new bound and
    # its coefficients (mixing in the first one's steers it badly).
    closed = spec.disjunct_margins(d["lower"][idx]) > 0
    return {**d, "open": d["open"].index_put((idx,), d["open"][idx] & ~closed),
            "lower": d["lower"].index_put((idx,), lower), "A": d["A"].index_put((idx,), A),
            "known": d["known"].index_put((idx,), known)}
