"""Bounds of every node: interval bounds everywhere, tightened by CROWN at the inputs of the
relaxed ops (:func:`crown_bounds`), one node's rows at a time (:func:`crown_node`), in chunks
whose size follows memory and, under a deadline, the time they take."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch

from certify.bounds.crown import RELAXED_OPS, BackwardContext, backward
from certify.bounds.forward import FORWARD_LINEAR_RULES, LinearForm, constant_form
from certify.bounds.interval import IBP_RULES, Bounds
from certify.budget import Budget
from certify.network import Network, Node, Op
from certify.relax import INEXACT

__all__ = ["CHUNK_BYTES", "crown_bounds", "crown_node", "interval_exact", "needed_rows"]


def crown_bounds(network: Network, box: Bounds, fixed: Mapping[str, Bounds] | None = None,
                 method: str = "crown", max_rows: int = 4096, forward_filter: bool | None = None,
                 budget: Budget | None = None) -> dict[str, Bounds]:
    """Bounds of every node: IBP everywhere, tightened by CROWN at every relaxed op's input.

    ``method`` is ``"ibp"``, ``"forward"`` (forward linear bounds, no CROWN) or ``"crown"``;
    ``fixed`` bounds (e.g. ReLU splits) are intersected in.
    For ReLU inputs only the neurons that are unstable *in a given domain* are refined (a stable
    ReLU's relaxation is exact whatever its bounds), each domain bounding its own rows.  With
    ``forward_filter`` (default: inputs of at most 64 values) the cheap forward linear bounds
    tighten IBP first, so fewer neurons look unstable.  Rows are bounded in chunks of
    ``max_rows`` (fewer where a chunk would pass :data:`CHUNK_BYTES` or :data:`CHUNK_WORK`).  Once the
    ``budget`` has expired the remaining nodes keep their interval bounds (sound, looser).
    """
    if forward_filter is None:
        forward_filter = network.input_size <= 64
    users = network.users()
    node_ops = {n.name: n.op for n in network.nodes}
    needs = {name for name, us in users.items() if any(node_ops[u] in RELAXED_OPS for u in us)}
    needs -= interval_exact(network)
    out: dict[str, Bounds] = {network.input.name: box}
    forms: dict[str, LinearForm] = {}
    d = network.input_size
    if method == "forward" or (forward_filter and method == "crown"):
        bsz = box.lower.shape[0]
        eye = torch.eye(d, dtype=box.lower.dtype, device=box.lower.device)
        eye = eye.reshape(*network.input_shape, d).unsqueeze(0).expand(bsz, *network.input_shape, d)
        zero = box.lower.new_zeros(box.lower.shape)
        forms[network.input.name] = LinearForm(eye, zero, eye, zero)
    for node in network.nodes[1:]:
        ins = [out[i] for i in node.inputs]
        b = IBP_RULES[node.op](node, ins)
        if forms:
            rule = FORWARD_LINEAR_RULES.get(node.op)
            form = rule(node, [forms[i] for i in node.inputs], ins) if rule is not None else constant_form(b, d)
            b = b.intersect(form.concretize(box))
        if fixed and node.name in fixed:
            b = b.intersect(fixed[node.name])
        if method == "crown" and node.name in needs and not (budget is not None and budget.expired):
            out[node.name] = b
            b = b.intersect(crown_node(network, node, out, {node_ops[u] for u in users[node.name]}, max_rows,
                                       budget=budget))
            if fixed and node.name in fixed:
                b = b.intersect(fixed[node.name])
        out[node.name] = b
        if forms:
            forms[node.name] = form
    return out


#: Ops that move, drop or scale elements one by one without duplicating them: interval bounds
#: stay exact through them.
_TRANSPARENT: frozenset[Op] = frozenset({Op.RESHAPE, Op.TRANSPOSE, Op.SLICE, Op.PAD, Op.AFFINE, Op.CONSTANT})
#: Ops whose outputs combine several inputs linearly: interval bounds are exact after one of them
#: applied to the input box, not after two.
_MIXING: frozenset[Op] = frozenset({Op.LINEAR, Op.CONV, Op.CONV_TRANSPOSE, Op.AVGPOOL, Op.REDUCE_SUM})


def interval_exact(network: Network) -> set[str]:
    """The nodes whose interval bounds are already exact (CROWN cannot tighten them): those that
    are the input box mapped by at most one mixing linear op and element-wise transparent ops."""
    mixes: dict[str, int] = {network.input.name: 0}
    for node in network.nodes[1:]:
        before = [mixes.get(i) for i in node.inputs]
        if any(m is None for m in before):
            continue
        depth = max(m for m in before if m is not None)
        if node.op in _TRANSPARENT and len(node.inputs) == 1:
            mixes[node.name] = depth
        elif node.op in _MIXING and depth == 0:
            mixes[node.name] = 1
    return set(mixes)


def needed_rows(need: torch.Tensor) -> torch.Tensor:
    """Each domain's needed neurons ``need: [B, n]`` as indices ``[B, R]``, ``R`` the largest
    count; shorter rows are padded by repeating their first needed neuron (still valid rows)."""
    counts = need.sum(1)
    r_max = int(counts.max()) if counts.numel() else 0
    order = torch.argsort(need.to(torch.int8), dim=1, descending=True, stable=True)[:, :r_max]
    valid = torch.arange(r_max, device=need.device).unsqueeze(0) < counts.unsqueeze(1)
    return torch.where(valid, order, order[:, :1].expand(-1, r_max))


#: The largest coefficient tensor one CROWN pass of intermediate bounds may hold (per chunk of
#: rows: rows x the largest node before the bounded one x 8 bytes); conv nets get smaller chunks.
CHUNK_BYTES = 2**28
#: ... and at most this many coefficient-node steps (rows x widest node x nodes passed): a few
#: seconds of a 2-core CPU, so a deadline is never missed by more than about one chunk.  ACAS
#: Xu's and MNIST-FC's passes stay whole (up to 6e7 and 3e8); conv nets get several chunks.
CHUNK_WORK = 2**30
#: Under a deadline: the rows of a first, measuring chunk, and the seconds later chunks aim at.
PROBE_ROWS = 16
CHUNK_SECONDS = 1.0


def crown_node(network: Network, node: Node, bounds: Mapping[str, Bounds], user_ops: set[Op],
               max_rows: int = 4096,
               slopes: Callable[[torch.Tensor], Mapping[str, torch.Tensor]] | None = None,
               budget: Budget | None = None) -> Bounds:
    """``node``'s bounds in ``bounds``, tightened by CROWN on the bounds of the nodes before it.
    Only the rows that matter are bounded: the neurons where some user's relaxation (``user_ops``)
    depends on the bounds (:data:`certify.relax.INEXACT`: a ReLU's unstable neurons), per domain.
    The ReLU lower
    slopes are CROWN's defaults, or ``slopes(rows)`` for the neurons ``rows: [B, r]`` (lower
    bound rows, then upper bound rows: ``[B, 2r, *shape]`` per ReLU).  Chunks stop once the
    ``budget`` has expired (the rows not reached keep their bounds)."""
    current = bounds[node.name]
    bsz, n = current.lower.shape[0], node.size
    lower = current.lower.flatten(1).clone()
    upper = current.upper.flatten(1).clone()
    need = torch.zeros_like(lower, dtype=torch.bool)  # [B, n]: neurons some user relaxes inexactly
    for op in user_ops:
        inexact = INEXACT.get(op)
        need |= inexact(lower, upper) if inexact is not None else torch.ones_like(need)
    rows = needed_rows(need)
    r_max = rows.shape[1]
    if r_max == 0:
        return current
    before = network.nodes[:network.nodes.index(node) + 1]
    widest = max(n.size for n in before)
    per_row = 2 * widest * max(1, bsz)  # coefficients per row, at the widest node
    cap = max(1, min(max_rows, CHUNK_BYTES // (8 * per_row), CHUNK_WORK // (per_row * len(before))))
    # With a deadline and several chunks to go, a small first chunk measures the time per row,
    # so that later chunks take about CHUNK_SECONDS and none starts that cannot end in time.
    chunk = min(cap, PROBE_ROWS) if budget is not None and r_max > cap else cap
    start, per_row = 0, 0.0
    while start < r_max:
        if budget is not None and start and budget.remaining < per_row * min(chunk, r_max - start):
            break
        began = time.monotonic()
        idx = rows[:, start:start + chunk]  # [B, r]
        r = idx.shape[1]
        eye = lower.new_zeros(bsz, r, n).scatter_(2, idx.unsqueeze(2), 1.0)
        c = torch.cat([eye, -eye], dim=1).reshape(bsz, 2 * r, *node.shape)
        ctx = BackwardContext(bounds, {} if slopes is None else slopes(idx))
        res = backward(network, node.name, c, ctx).lower
        lower = lower.scatter_reduce(1, idx, res[:, :r], reduce="amax")
        upper = upper.scatter_reduce(1, idx, -res[:, r:], reduce="amin")
        start += r
        per_row = (time.monotonic() - began) / r
        if budget is not None:
            chunk = max(1, min(cap, int(CHUNK_SECONDS / max(per_row, 1e-9))))
    return Bounds(lower.reshape(current.lower.shape), upper.reshape(current.upper.shape))


