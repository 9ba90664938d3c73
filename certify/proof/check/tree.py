"""The certificate's tree: its structure and parameters checked as a whole (:func:`structure`,
:func:`parameters`, :func:`plan`), then a walk (:func:`walk`) that recomputes every region's
bounds from its parent's and checks its closures, in batches of nodes whose parents are done
(deepest first, so that few parents' bounds are held at a time).

A node's bounds: its parent's (the root: none), cut by its edge (a box side, or a neuron's
bound), then recomputed by :func:`~certify.proof.check.propagate.relu_bounds` from ReLU layer
``start`` on and intersected: the root, INPUT children and nodes that carry slope blocks
recompute every layer (by interval arithmetic and CROWN); a NEURON child of a split in layer
``k`` recomputes layers ``k + 1 ..`` by CROWN; a SAME child keeps its parent's.  CROWN uses
the slopes of the node's effective blocks (its own, or its nearest ancestor's) for the neurons
they list, CROWN's adaptive ones elsewhere; a node with blocks of its own also bounds those
neurons with adaptive slopes, and keeps the better of the two.

Every function returns the first failure as a sentence ("" when there is none).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from certify.proof.certificate import Certificate, Edge
from certify.proof.check.chain import Chain
from certify.proof.check.propagate import Slopes, Values, adaptive, backward, relu_bounds
from certify.proof.check.rounding import down, mm, nonneg_dot_up, up

#: nodes per batch of the walk, and bytes of one closure batch's coefficient array
BATCH_NODES = 512
CLOSURE_BYTES = 32 << 20
OUT_OF_TIME = "not checked to the end: the deadline passed"


@dataclass(frozen=True, eq=False)
class Plan:
    """What the walk needs, derived from the certificate once."""

    start: np.ndarray  # [n] the first ReLU layer a node recomputes by CROWN (L: none)
    blocks: np.ndarray  # [n, L] the node's effective slope block per layer (-1: adaptive)
    own: np.ndarray  # [n] the node carries its own blocks
    open_leaf: np.ndarray  # [n] a disjunct the node leaves open as a leaf (-1: none)
    children: list[np.ndarray]  # per node, its children


def _first_failure(checks: Iterable[tuple[Callable[[], np.ndarray], Callable[[int], str]]]) -> str:
    """The message of the first check whose mask (computed in turn) has a True entry, for it."""
    for bad, say in checks:
        mask = bad()
        if mask.any():
            return say(int(np.argmax(mask)))
    return ""


def structure(cert: Certificate, n_in: int, n_relu: int) -> str:
    """Step 3: parents first, valid edges, children that cover their parent."""
    n, parent, edge, index, point = cert.n_nodes, cert.parent, cert.edge.astype(np.int64), cert.index, cert.point
    if n == 0 or parent[0] != -1 or edge[0] != Edge.ROOT:
        return "node 0 is not the root (parent -1, edge ROOT)"
    ids, inp, neu = np.arange(n), np.isin(edge, (1, 2)), np.isin(edge, (3, 4))
    count = np.zeros((n, 6), dtype=np.int64)  # children per parent and edge
    pair = np.zeros(n, dtype=np.int64)  # a split parent's LOW and HIGH children: their ids add up here
    low = np.full(n, -1)
    same = cert.same_node
    listed = np.bincount(same[(same >= 0) & (same < n)], minlength=n)

    def children() -> np.ndarray:
        np.add.at(count, (parent[1:], edge[1:]), 1)
        total = count.sum(1)
        one = (count[:, 1] == 1) & (count[:, 2] == 1) | (count[:, 3] == 1) & (count[:, 4] == 1)
        return (total > 0) & (count[:, 5] != total) & ~(one & (total == 2))

    def halves() -> np.ndarray:
        lows = np.nonzero(np.isin(edge, (1, 3)))[0]
        low[parent[lows]] = lows
        np.add.at(pair, parent[inp | neu], ids[inp | neu])
        high = np.where(low >= 0, pair - low, 0)
        return (low >= 0) & ((index[low] != index[high]) | (point[low] != point[high]))

    def kinds(p: int) -> str:
        found = ", ".join(f"{Edge(e).name} x{c}" for e, c in enumerate(count[p]) if c)
        return f"node {p}: its children ({found}) are neither a LOW and HIGH pair of one kind nor SAME children"

    def gap(p: int) -> str:
        a, b = low[p], pair[p] - low[p]
        what = "the halves leave a gap" if point[a] < point[b] else "the halves do not meet"
        return f"node {p}: {what}: LOW (node {a}) at {point[a]}, HIGH (node {b}) at {point[b]} (index {index[b]})"

    def same_listed(i: int) -> str:
        if i == n:
            return "same_node lists a node that does not exist"
        return f"node {i}: listed {listed[i]} times in same_node, its edge is {Edge(edge[i]).name}"

    return _first_failure([
        (lambda: (ids > 0) & ((parent < 0) | (parent >= ids)),
         lambda i: f"node {i}: its parent {parent[i]} does not come before it"),
        (lambda: (ids > 0) & ((edge < 1) | (edge > 5)), lambda i: f"node {i}: edge {edge[i]} is not a child's edge"),
        (lambda: (inp | neu) & ~np.isfinite(point), lambda i: f"node {i}: split point {point[i]} is not finite"),
        (lambda: inp & ((index < 0) | (index >= n_in)), lambda i: f"node {i}: input {index[i]} is not in [0, {n_in})"),
        (lambda: neu & ((index < 0) | (index >= n_relu)),
         lambda i: f"node {i}: neuron {index[i]} is not in [0, {n_relu})"),
        (children, kinds),
        (halves, gap),
        (lambda: np.append(listed != (edge == Edge.SAME), listed.sum() != same.shape[0]), same_listed),
    ])


def parameters(cert: Certificate, rows: np.ndarray) -> str:
    """Step 5, what does not depend on the region: every closure's and slope block's values."""
    c, n, sizes, total = cert, cert.n_nodes, cert.relu_sizes, int(cert.relu_sizes.sum())
    q, layer, node, r = c.slope_node.shape[0], c.slope_layer, c.slope_node, np.diff(c.slope_rows_ptr)
    owner = np.repeat(np.arange(q), r)

    def entry(ptr: str, values: np.ndarray, bad: Callable[[], np.ndarray], what: str,
              ) -> tuple[Callable[[], np.ndarray], Callable[[int], str]]:
        """A check on the ragged ``values`` under pointer ``ptr``; ``what`` formats the value."""
        def say(e: int) -> str:
            k = int(np.searchsorted(getattr(c, ptr), e, side="right")) - 1
            where = f"slope block {k}" if ptr == "slope_values_ptr" else f"node {c.closure_node[k]}, closure {k}"
            return f"{where}: " + what.format(values[e])
        return bad, say

    def in01(v: np.ndarray) -> Callable[[], np.ndarray]:
        return lambda: ~((v >= 0) & (v <= 1))  # NaN too

    def neuron(ptr: np.ndarray, v: np.ndarray) -> Callable[[], np.ndarray]:
        return lambda: (v < 0) | (v >= total) | _repeated(ptr, v)

    return _first_failure([
        (lambda: (c.closure_node < 0) | (c.closure_node >= n),
         lambda k: f"closure {k} is for node {c.closure_node[k]}, which does not exist"),
        (lambda: (c.closure_disjunct < 0) | (c.closure_disjunct >= rows.shape[0]),
         lambda k: f"closure {k} is for disjunct {c.closure_disjunct[k]}, which does not exist"),
        (lambda: np.diff(c.weights_ptr) != rows[c.closure_disjunct],
         lambda k: f"closure {k}: {np.diff(c.weights_ptr)[k]} weights for {rows[c.closure_disjunct[k]]} rows"),
        entry("weights_ptr", c.weights, lambda: ~(np.isfinite(c.weights) & (c.weights >= 0)),
              "weight {} is not finite and >= 0"),
        entry("alpha_ptr", c.alpha, in01(c.alpha), "alpha {} is not in [0, 1]"),
        entry("alpha_ptr", c.alpha_index, neuron(c.alpha_ptr, c.alpha_index),
              "alpha index {} is not a neuron or repeated"),
        entry("beta_ptr", c.beta, lambda: ~(np.isfinite(c.beta) & (c.beta >= 0)), "beta {} is not finite and >= 0"),
        entry("beta_ptr", c.beta_index, neuron(c.beta_ptr, c.beta_index),
              "beta index {} is not a neuron or repeated"),
        entry("beta_ptr", c.beta_side, lambda: (c.beta_side != 1) & (c.beta_side != -1),
              "beta side {} is not +1 or -1"),
        entry("beta_ptr", c.beta_point, lambda: ~np.isfinite(c.beta_point), "beta point {} is not finite"),
        (lambda: (node < 0) | (node >= n) | (layer < 0) | (layer >= sizes.shape[0])
         | _repeated(np.array([0, q]), node * sizes.shape[0] + layer),
         lambda k: f"slope block {k} is for node {node[k]}, layer {layer[k]}: not a node and layer, or a second"),
        (lambda: np.diff(c.slope_values_ptr) != r * c.offsets[layer],
         lambda k: f"slope block {k}: its values are not rows x earlier neurons"),
        (lambda: (c.slope_neurons < 0) | (c.slope_neurons >= sizes[layer][owner])
         | _repeated(c.slope_rows_ptr, c.slope_neurons),
         lambda e: f"slope block {owner[e]}: neuron {c.slope_neurons[e]} is out of its layer or repeated"),
        entry("slope_values_ptr", c.slope_lower, in01(c.slope_lower), "slope_lower {} is not in [0, 1]"),
        entry("slope_values_ptr", c.slope_upper, in01(c.slope_upper), "slope_upper {} is not in [0, 1]"),
    ])


def _repeated(ptr: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Entries whose value appears earlier within their segment of ``ptr``."""
    seg = np.repeat(np.arange(ptr.shape[0] - 1), np.diff(ptr))
    order = np.lexsort((np.arange(values.shape[0]), values, seg))
    dup = np.zeros(values.shape[0], dtype=bool)
    dup[order[1:]] = (seg[order[1:]] == seg[order[:-1]]) & (values[order[1:]] == values[order[:-1]])
    return dup


def plan(cert: Certificate, k: int) -> tuple[Plan, str]:
    """Open disjuncts, coverage by SAME children, effective slopes and first layers to recompute."""
    n, parent = cert.n_nodes, cert.parent.tolist()
    closed = [0] * n
    for node, d in zip(cert.closure_node.tolist(), cert.closure_disjunct.tolist()):
        closed[node] |= 1 << d
    mask = {int(i): sum(1 << int(d) for d in np.nonzero(m)[0]) for i, m in zip(cert.same_node, cert.same_mask)}
    own = np.zeros(n, dtype=bool)
    own[cert.slope_node] = True
    owner, owns, after, cover, full = [0] * n, own.tolist(), [0] * n, [0] * n, (1 << k) - 1
    fresh = np.isin(cert.edge, (Edge.INPUT_LOW, Edge.INPUT_HIGH)).tolist()  # a new box: slopes start over
    for i, p in enumerate(parent):
        after[i] = (full if p < 0 else after[p] & mask.get(i, full)) & ~closed[i]  # open below i
        owner[i] = i if owns[i] or p < 0 or fresh[i] else owner[p]
        if i in mask:
            cover[p] |= mask[i]
    for p in sorted({parent[i] for i in mask}):
        if after[p] & ~cover[p]:
            why = f"node {p}: its SAME children leave disjunct {_lowest_bit(after[p] & ~cover[p])} open"
            return Plan(*([np.zeros(0)] * 4), []), why
    layers = cert.relu_sizes.shape[0]
    blocks = np.full((n, layers), -1, dtype=np.int64)
    blocks[cert.slope_node, cert.slope_layer] = np.arange(cert.slope_node.shape[0])
    split_layer = np.searchsorted(cert.offsets, cert.index, side="right") - 1
    start = np.where(np.isin(cert.edge, (Edge.NEURON_LOW, Edge.NEURON_HIGH)), split_layer + 1,
                     np.where(cert.edge == Edge.SAME, layers, 0))
    start[own] = 0
    ptr = np.concatenate([[0], np.cumsum(np.bincount(cert.parent[1:], minlength=n))])
    open_leaf = np.array([_lowest_bit(a) if a and leaf else -1 for a, leaf in zip(after, (np.diff(ptr) == 0).tolist())])
    children = np.split(np.argsort(cert.parent[1:], kind="stable") + 1, ptr[1:-1])
    return Plan(start, blocks[np.asarray(owner)], own, open_leaf, children), ""


def segments(ptr: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The entries of segments ``which`` of ``ptr`` (in order), and the position in ``which`` of each."""
    counts = ptr[which + 1] - ptr[which]
    at = np.repeat(np.arange(which.shape[0]), counts)
    return (np.arange(at.shape[0]) + np.repeat(ptr[which] - (np.cumsum(counts) - counts), counts)).astype(np.int64), at


def _lowest_bit(bits: int) -> int:
    """The index of the lowest set bit (the first disjunct in a mask of bits)."""
    return (bits & -bits).bit_length() - 1


@dataclass(frozen=True, eq=False)
class Objectives:
    """Each closure's objective on the output: coefficients ``c``, their rounding error, and
    an upper bound of ``sum w b``."""

    c: np.ndarray  # [M, n_out]
    c_err: np.ndarray
    wb_up: np.ndarray  # [M]


def objectives(cert: Certificate, unsafe: Sequence[tuple[np.ndarray, np.ndarray]], n_out: int) -> Objectives:
    m, width = cert.n_closures, max([a.shape[0] for a, _ in unsafe] + [1])
    w = np.zeros((m, 1, width))
    e, at = segments(cert.weights_ptr, np.arange(m))
    w[at, 0, e - cert.weights_ptr[at]] = cert.weights[e]
    a, b = np.zeros((len(unsafe), width, n_out)), np.zeros((len(unsafe), width, 1))
    for d, (ad, bd) in enumerate(unsafe):
        a[d, : ad.shape[0]], b[d, : ad.shape[0], 0] = ad, bd
    c, c_err = mm(w, a[cert.closure_disjunct])
    s, s_err = mm(w, b[cert.closure_disjunct])
    return Objectives(c[:, 0], c_err[:, 0], up(s + s_err)[:, 0, 0])


def walk(cert: Certificate, chain: Chain, lower: np.ndarray, upper: np.ndarray, pl: Plan, obj: Objectives,
         deadline: float | None = None) -> str:
    """Steps 4 and 5 on every region that is not empty (:data:`OUT_OF_TIME` once ``deadline``,
    a ``time.monotonic()``, has passed)."""
    n_relu = int(cert.offsets[-1])
    slopes = Slopes(cert.slope_rows_ptr, cert.slope_neurons, cert.slope_values_ptr,
                    cert.slope_lower.astype(np.float64), cert.slope_upper.astype(np.float64), cert.offsets)
    by_node = np.argsort(cert.closure_node, kind="stable")
    cptr = np.concatenate([[0], np.cumsum(np.bincount(cert.closure_node, minlength=cert.n_nodes))])
    held: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}  # node -> its bounds and box
    waiting = [len(c) for c in pl.children]
    ready = [np.zeros(1, dtype=np.int64)]
    while ready:
        if deadline is not None and time.monotonic() > deadline:
            return OUT_OF_TIME
        take, size = [], 0
        while ready and size < BATCH_NODES:
            take.append(ready.pop())
            size += take[-1].shape[0]
        ids = np.concatenate(take)
        if size > BATCH_NODES:
            ready.append(ids[BATCH_NODES:])
            ids = ids[:BATCH_NODES]
        if ids[0] == 0:
            lo, hi = np.full((1, n_relu), -np.inf), np.full((1, n_relu), np.inf)
            xl, xu = lower[None].copy(), upper[None].copy()
        else:
            lo, hi, xl, xu = (np.stack(a) for a in zip(*(held[p] for p in cert.parent[ids].tolist())))
        reason = _cut(cert, ids, lo, hi, xl, xu)
        if reason:
            return reason
        lo, hi, vals = relu_bounds(chain, xl, xu, lo, hi, pl.start[ids], slopes, pl.blocks[ids], pl.own[ids])
        empty = np.any(lo > hi, axis=1) | np.any(xl > xu, axis=1)
        rows = np.nonzero(~empty)[0]
        sel, at = segments(cptr, ids[rows])
        reason = _closures(cert, chain, by_node[sel], rows[at], lo, hi, vals, obj)
        bad = (pl.open_leaf[ids] >= 0) & ~empty
        if reason or bad.any():
            i = int(np.argmax(bad))
            return reason or f"node {ids[i]} (leaf): disjunct {pl.open_leaf[ids[i]]} is not ruled out (no closure)"
        for r in rows.tolist():
            if waiting[ids[r]]:
                held[int(ids[r])] = (lo[r].copy(), hi[r].copy(), xl[r].copy(), xu[r].copy())
                ready.append(pl.children[ids[r]])
        for p in cert.parent[ids].tolist():
            if p >= 0:
                waiting[p] -= 1
                if waiting[p] == 0:
                    del held[p]
    return ""


def _cut(cert: Certificate, ids: np.ndarray, lo: np.ndarray, hi: np.ndarray, xl: np.ndarray, xu: np.ndarray) -> str:
    """Apply each node's edge to its parent's bounds and box (in place)."""
    edge, j, x = cert.edge[ids], cert.index[ids], cert.point[ids]
    rows, inp = np.arange(ids.shape[0]), (edge == Edge.INPUT_LOW) | (edge == Edge.INPUT_HIGH)
    d = np.where(inp, j, 0)
    bad = inp & ~((xl[rows, d] <= x) & (x <= xu[rows, d]))
    if bad.any():
        r = int(np.argmax(bad))
        return (f"node {ids[r]} ({Edge(edge[r]).name}): point {x[r]} is outside the parent's range "
                f"[{xl[r, d[r]]}, {xu[r, d[r]]}] of input {d[r]}")
    for e, arr, fn in ((Edge.INPUT_LOW, xu, np.minimum), (Edge.INPUT_HIGH, xl, np.maximum),
                       (Edge.NEURON_LOW, hi, np.minimum), (Edge.NEURON_HIGH, lo, np.maximum)):
        r = np.nonzero(edge == e)[0]
        arr[r, j[r]] = fn(arr[r, j[r]], x[r])
    return ""


def _closures(cert: Certificate, chain: Chain, cl: np.ndarray, row: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              vals: Values, obj: Objectives) -> str:
    """Closures ``cl`` on the batch's rows ``row``, in chunks: beta constraints hold, bound > 0."""
    step = max(1, CLOSURE_BYTES // (8 * max(chain.sizes + (lo.shape[1],))))
    for c0 in range(0, cl.shape[0], step):
        reason = _closure_chunk(cert, chain, cl[c0: c0 + step], row[c0: c0 + step], lo, hi, vals, obj)
        if reason:
            return reason
    return ""


def _closure_chunk(cert: Certificate, chain: Chain, c: np.ndarray, r: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   vals: Values, obj: Objectives) -> str:
    e, er = segments(cert.beta_ptr, c)
    j, side, point = cert.beta_index[e], cert.beta_side[e], cert.beta_point[e]
    bad = ~np.where(side > 0, lo[r[er], j] >= point, hi[r[er], j] <= point)
    if bad.any():
        q = int(np.argmax(bad))
        return (f"node {cert.closure_node[c[er[q]]]}, closure {c[er[q]]}: beta constraint z[{j[q]}] "
                f"{'>=' if side[q] > 0 else '<='} {point[q]} does not hold on the region (bounds "
                f"[{lo[r[er[q]], j[q]]}, {hi[r[er[q]], j[q]]}])")
    coef, const = np.zeros((c.shape[0], lo.shape[1])), np.zeros((c.shape[0], lo.shape[1]))
    bs = cert.beta[e] * side
    coef[er, j], const[er, j] = bs, down(bs * point)
    alpha = np.full((c.shape[0], lo.shape[1]), np.nan)  # NaN: adaptive
    ea, ar = segments(cert.alpha_ptr, c)
    alpha[ar, cert.alpha_index[ea]] = cert.alpha[ea]
    offsets = cert.offsets

    def slope(k: int, l: np.ndarray, u: np.ndarray) -> np.ndarray:
        a = alpha[:, None, offsets[k]: offsets[k + 1]]
        return np.where(np.isnan(a), adaptive(l, u)[:, None, :], a)

    v = [(a[r], b[r]) for a, b in vals]
    mag = np.maximum(np.abs(v[-1][0]), np.abs(v[-1][1]))
    k0 = -up(obj.wb_up[c] + nonneg_dot_up(obj.c_err[c], mag))  # <= -(sum w b) - |c - c_exact| . |y|
    bound = backward(chain, len(chain.layers), obj.c[c][:, None, :], k0[:, None], v, slope, (coef, const))[:, 0]
    bad = ~(bound > 0)
    if bad.any():
        q = int(np.argmax(bad))
        return (f"node {cert.closure_node[c[q]]}, closure {c[q]} (disjunct {cert.closure_disjunct[c[q]]}): "
                f"lower bound {bound[q]:.6g} is not > 0")
    return ""
