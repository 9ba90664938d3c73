"""alpha-CROWN: ReLU lower slopes optimized by projected gradient ascent, on an objective
(:func:`alpha_crown_objective`) and on the intermediate bounds layer by layer
(:func:`alpha_crown_layers`), with the slopes it found (:class:`NodeSlopes`) for reuse."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from certify.bounds.crown import LinearBound, crown_objective
from certify.bounds.intermediate import crown_bounds, needed_rows
from certify.bounds.interval import Bounds
from certify.budget import Budget
from certify.network import Network, Op
from certify.relax import relu_default_alpha

__all__ = ["AlphaOptions", "NodeSlopes", "adam", "alpha_crown_bounds", "alpha_crown_layers", "alpha_crown_objective"]


@dataclass(frozen=True, slots=True)
class AlphaOptions:
    """``shared``: one slope per neuron for all objective rows (one optimization serves every
    output spec); otherwise one per (row, neuron), which is never looser."""

    iterations: int = 30
    lr: float = 0.25
    lr_decay: float = 0.95
    shared: bool = False
    #: Optimize the slopes in this dtype (e.g. float32, about twice as fast on a CPU), then
    #: compute the returned bound once in the bounds' own dtype with the slopes found: any
    #: slope in [0, 1] is sound, so only the final evaluation needs the higher precision.
    search_dtype: torch.dtype | None = None


def adam(params: list[torch.Tensor] | list[dict[str, Any]], lr: float) -> torch.optim.Adam:
    """Adam over ``params`` (tensors, or groups with their own ``lr``), fused into one kernel per
    step where this torch build has that for the params' device (CPU since torch 2.4): on a
    CPU, ten times faster per step than the loop over elementwise ops."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def alpha_crown_objective(network: Network, bounds: Mapping[str, Bounds], c: torch.Tensor,
                          options: AlphaOptions = AlphaOptions(),
                          init: Mapping[str, torch.Tensor] | None = None,
                          stop: Callable[[torch.Tensor], bool] | None = None,
                          budget: Budget | None = None,
                          ) -> tuple[LinearBound, dict[str, torch.Tensor]]:
    """alpha-CROWN on the final objective: ReLU lower slopes optimized by projected gradient
    ascent on the sum of the rows' lower bounds; one alpha per (row, neuron).

    Returns the best bound found per row (never looser than CROWN, which is the starting point)
    and the final alphas (to warm-start children in branch and bound).  ``stop(lower)`` may end
    the optimization early (e.g. once every row is proved), and so does the ``budget``'s deadline.
    """
    if options.search_dtype is not None and options.search_dtype != c.dtype and options.iterations > 0:
        return _alpha_search_cast(network, bounds, c, options, init, stop, budget)
    bsz = c.shape[0]
    rows = 1 if options.shared else c.shape[1]
    relus = [n for n in network.nodes if n.op is Op.RELU]
    alphas: dict[str, torch.Tensor] = {}
    for n in relus:
        pre = bounds[n.inputs[0]]
        if init is not None and n.name in init and init[n.name].shape[:2] == (bsz, rows):
            a0 = init[n.name].detach().clone()
        else:
            a0 = relu_default_alpha(pre.lower, pre.upper).unsqueeze(1).expand(bsz, rows, *n.shape).clone()
        alphas[n.name] = a0.requires_grad_(True)
    with torch.no_grad():
        best = crown_objective(network, bounds, c, alphas)
    if not relus or options.iterations <= 0 or (stop is not None and stop(best.lower)):
        return best, {k: v.detach() for k, v in alphas.items()}
    best_alpha = {k: v.detach().clone() for k, v in alphas.items()}
    opt = adam(list(alphas.values()), lr=options.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, options.lr_decay)
    for _ in range(options.iterations):
        if budget is not None and budget.expired:
            break
        with torch.enable_grad():
            res = crown_objective(network, bounds, c, alphas)
            loss = -res.lower.sum()
            opt.zero_grad()
            loss.backward()
        with torch.no_grad():
            improved = res.lower > best.lower  # [B, S]
            if bool(improved.any()):
                mask = improved
                best = LinearBound(
                    torch.where(_expand(mask, res.A), res.A.detach(), best.A),
                    torch.where(mask, res.bias.detach(), best.bias),
                    torch.where(mask, res.lower.detach(), best.lower),
                )
                for k, v in alphas.items():
                    row_mask = mask.any(dim=1, keepdim=True) if options.shared else mask
                    best_alpha[k] = torch.where(_expand(row_mask, v), v.detach(), best_alpha[k])
            if stop is not None and stop(best.lower):
                break
            opt.step()
            sched.step()
            for v in alphas.values():
                v.clamp_(0.0, 1.0)
    return best, best_alpha


def _alpha_search_cast(network: Network, bounds: Mapping[str, Bounds], c: torch.Tensor, options: AlphaOptions,
                       init: Mapping[str, torch.Tensor] | None, stop: Callable[[torch.Tensor], bool] | None,
                       budget: Budget | None) -> tuple[LinearBound, dict[str, torch.Tensor]]:
    """alpha-CROWN with the slopes searched in ``options.search_dtype`` and the bound computed
    in ``c.dtype``: per row, the better of plain CROWN and the searched slopes' bound."""
    low, high = options.search_dtype, c.dtype
    cast = {k: Bounds(v.lower.to(low), v.upper.to(low)) for k, v in bounds.items()}
    start = None if init is None else {k: v.to(low) for k, v in init.items()}
    _, alphas = alpha_crown_objective(network.to(dtype=low), cast, c.to(low), replace(options, search_dtype=None),
                                      start, stop, budget)
    alphas = {k: v.to(high) for k, v in alphas.items()}
    with torch.no_grad():
        found = crown_objective(network, bounds, c, alphas)
        plain = crown_objective(network, bounds, c)
    better = found.lower >= plain.lower
    best = LinearBound(torch.where(_expand(better, found.A), found.A, plain.A),
                       torch.where(better, found.bias, plain.bias), torch.maximum(found.lower, plain.lower))
    used = {}  # the slopes that give ``best``: CROWN's own where plain CROWN won
    for n in network.nodes:
        if n.op is Op.RELU and n.name in alphas:
            pre = bounds[n.inputs[0]]
            a = alphas[n.name].expand(-1, better.shape[1], *alphas[n.name].shape[2:])  # shared: one row
            default = relu_default_alpha(pre.lower, pre.upper).unsqueeze(1).expand_as(a)
            used[n.name] = torch.where(_expand(better, a), a, default)
    return best, used


@dataclass(frozen=True, slots=True)
class NodeSlopes:
    """The ReLU lower slopes alpha-CROWN found for one ReLU input node's bounds: ``rows [B, R]``
    the neurons it bounded (per box; padded by repeating, see :func:`_needed_rows`),
    ``position [B, n]`` each neuron's row (0 for a neuron not bounded) and, per ReLU before the
    node, ``alphas[relu]: [B, 2R, *relu.shape]`` (the lower bound rows, then the upper bound
    rows).  Any slope in [0, 1] is sound, so they may be reused on tighter bounds."""

    rows: torch.Tensor
    position: torch.Tensor
    alphas: Mapping[str, torch.Tensor]

    @staticmethod
    def of(rows: torch.Tensor, alphas: Mapping[str, torch.Tensor], size: int) -> NodeSlopes:
        """The slopes of ``rows [B, R]`` of a node of ``size`` neurons."""
        n_boxes, big_r = rows.shape
        position = rows.new_zeros(n_boxes, size)
        position.scatter_(1, rows, torch.arange(big_r, device=rows.device).expand(n_boxes, -1))
        return NodeSlopes(rows, position, alphas)

    def gather(self, idx: torch.Tensor, box: torch.Tensor) -> dict[str, torch.Tensor]:
        """The slopes for bounding neurons ``idx: [B, r]`` of boxes ``box: [B]`` (row ``i``: the
        lower bound of neuron ``idx[:, i]``, row ``r + i`` its upper bound): ``[B, 2r, *shape]``
        per ReLU.  A neuron this node's rows do not hold gets the first row's slopes."""
        n_boxes, big_r = self.rows.shape
        flat = box.unsqueeze(1) * (2 * big_r) + self.position[box.unsqueeze(1), idx]  # [B, r]
        picks = torch.cat([flat, flat + big_r], dim=1).flatten()
        out = {}
        for name, a in self.alphas.items():
            table = a.reshape(n_boxes * 2 * big_r, *a.shape[2:])
            out[name] = table.index_select(0, picks).reshape(idx.shape[0], 2 * idx.shape[1], *a.shape[2:])
        return out


def alpha_crown_bounds(network: Network, box: Bounds, options: AlphaOptions = AlphaOptions(iterations=20),
                       bounds: Mapping[str, Bounds] | None = None, budget: Budget | None = None,
                       ) -> dict[str, Bounds]:
    """Bounds of every node with the unstable ReLU inputs tightened by alpha-CROWN (see
    :func:`alpha_crown_layers`)."""
    return alpha_crown_layers(network, box, options, bounds, budget)[0]


def alpha_crown_layers(network: Network, box: Bounds, options: AlphaOptions = AlphaOptions(iterations=20),
                       bounds: Mapping[str, Bounds] | None = None, budget: Budget | None = None,
                       ) -> tuple[dict[str, Bounds], dict[str, NodeSlopes]]:
    """Bounds of every node with the unstable ReLU inputs tightened by alpha-CROWN, and the
    slopes that tightened each such node.

    Starts from ``bounds`` (default: :func:`crown_bounds`).  Layer by layer, every ReLU input
    node behind at least one ReLU has the bounds of its unstable neurons (per domain) optimized
    as the objective of the network cut at that node, with its own slopes per row, using the
    tightened bounds of the layers before it.  Every slope in ``[0, 1]`` gives a sound bound
    and the result is intersected with the starting one, so it is never looser.  Once the
    ``budget`` has expired the remaining layers keep their starting bounds.
    """
    out = dict(crown_bounds(network, box, budget=budget) if bounds is None else bounds)
    slopes: dict[str, NodeSlopes] = {}
    users = network.users()
    ops = {n.name: n.op for n in network.nodes}
    seen_relu = False
    for k, node in enumerate(network.nodes):
        if budget is not None and budget.expired:
            break
        if node.op is Op.RELU:
            seen_relu = True
        if not seen_relu or not users[node.name] or any(ops[u] is not Op.RELU for u in users[node.name]):
            continue
        current = out[node.name]
        bsz, n = current.lower.shape[0], node.size
        lower, upper = current.lower.flatten(1), current.upper.flatten(1)
        idx = needed_rows((lower < 0) & (upper > 0))
        r_max = idx.shape[1]
        if r_max == 0:
            continue
        eye = lower.new_zeros(bsz, r_max, n).scatter_(2, idx.unsqueeze(2), 1.0)
        c = torch.cat([eye, -eye], dim=1)
        cut = Network(network.nodes[:k + 1], node.name, network.name)
        best, alphas = alpha_crown_objective(cut, out, c, options, budget=budget)
        slopes[node.name] = NodeSlopes.of(idx, alphas, n)
        res = best.lower.detach()
        new_lower = lower.scatter_reduce(1, idx, res[:, :r_max], reduce="amax")
        new_upper = upper.scatter_reduce(1, idx, -res[:, r_max:], reduce="amin")
        out[node.name] = Bounds(new_lower.reshape(current.lower.shape), new_upper.reshape(current.upper.shape))
    return out, slopes


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.reshape(*mask.shape, *([1] * (like.dim() - 2)))
