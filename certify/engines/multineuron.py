"""The ``multineuron`` engine: the ``lp`` relaxation plus PRIMA-style multi-neuron cuts.

For groups of ``k`` unstable ReLUs of one layer (``k`` = 2..4; the neurons with the largest
triangles, in overlapping windows) the joint input-output relation
``{(x, relu(x)) : x in P}`` is convexified over an *octahedral* input region ``P``: the box
``l <= x <= u`` intersected with bounds on every ``x_i + x_j`` and ``x_i - x_j`` of the
group, computed by CROWN (:func:`certify.bounds.backward`) on the pre-activation node.

The hull is exact for that region: inside each orthant ``sigma`` the ReLU is linear, so
``conv(graph over P) = conv(U_sigma image of the vertices of P cap orthant_sigma)``.  The
vertices are enumerated (every k-subset of the few defining rows, kept when feasible), lifted
to ``(x, relu_sigma(x))`` and handed to qhull (``scipy.spatial.ConvexHull``); each facet
``n . p <= c`` becomes a cut after ``c`` is recomputed as ``max n . p`` over the points and
widened by ``1e-9 (1 + |c|)``, so a cut never excludes a point of the exact graph over ``P``.
Facets that touch one neuron only (the single-neuron triangle again) are dropped.  Degenerate
groups (qhull fails) are skipped, which is sound.

The cuts are added to the single-neuron LP, so the bound is never looser than ``lp``'s.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from certify.bounds import BackwardContext, Bounds, backward
from certify.budget import Budget
from certify.encode import ConstraintSystem, encode
from certify.engines.base import Capabilities, Support, check_modules, require_modules, supports_encoding
from certify.linprog import (
    CVXPY_MODULES,
    CVXPY_OPS,
    LP_TOLERANCE,
    problem_bounds,
    relaxation_model,
    relaxation_verdict,
    solve_disjuncts,
)
from certify.numeric import guarded
from certify.options import from_mapping
from certify.problem import Problem
from certify.verdict import Verdict

log = logging.getLogger(__name__)

#: Relative slack added to CROWN's octahedral bounds and to every cut's right-hand side.
CUT_SLACK = 1e-9
OCTA_SLACK = 1e-7


@dataclass(frozen=True, slots=True)
class MultiNeuronOptions:
    k: int = 3  # group size (2..4)
    max_neurons: int = 24  # per layer, the unstable neurons with the largest triangles
    max_groups: int = 40  # per layer
    solver: str = "auto"
    tolerance: float = LP_TOLERANCE


def choose_groups(lower: np.ndarray, upper: np.ndarray, k: int, max_neurons: int, max_groups: int) -> list[tuple[int, ...]]:
    """Groups of ``k`` positions (into ``lower``/``upper``): the ``max_neurons`` neurons with the
    largest triangle area ``-l u`` in windows that overlap by one neuron (``k - 1`` apart),
    plus the pairs that make each window wrap around, until ``max_groups``."""
    area = -lower * upper
    order = [int(i) for i in np.argsort(-area)[:max_neurons]]
    if len(order) < k:
        return [tuple(order)] if len(order) >= 2 else []
    groups: list[tuple[int, ...]] = []
    step = max(1, k - 1)
    for start in range(0, len(order) - k + 1, step):
        groups.append(tuple(order[start:start + k]))
    # A second sweep with a different stride adds overlapping groups (PRIMA's sparse overlap).
    for start in range(0, len(order) - 2 * k + 1, k):
        g = tuple(order[start:start + 2 * k:2])
        if g not in groups:
            groups.append(g)
    return groups[:max_groups]


def octahedral_bounds(network_node: str, network: Any, bounds: Mapping[str, Bounds], pairs: list[tuple[int, int]]
                      ) -> np.ndarray:
    """CROWN bounds of ``x_i + x_j`` and ``x_i - x_j`` at node ``network_node`` (flat indices):
    ``[P, 4]`` = (lower sum, upper sum, lower diff, upper diff), widened by OCTA_SLACK."""
    node = network.node(network_node)
    n = node.size
    rows = []
    for i, j in pairs:
        for si, sj in ((1, 1), (-1, -1), (1, -1), (-1, 1)):
            c = np.zeros(n)
            c[i] += si
            c[j] += sj
            rows.append(c)
    c = torch.tensor(np.stack(rows), dtype=torch.float64).reshape(1, len(rows), *node.shape)
    with torch.no_grad():
        low = backward(network, network_node, c, BackwardContext(bounds)).lower[0].numpy().reshape(-1, 4)
    out = np.stack([low[:, 0], -low[:, 1], low[:, 2], -low[:, 3]], axis=1)
    pad = OCTA_SLACK * (1 + np.abs(out))
    return out + pad * np.array([-1, 1, -1, 1])


def _vertices(g: np.ndarray, h: np.ndarray, k: int) -> np.ndarray:
    """Vertices of ``{x in R^k : g x <= h}`` (a bounded polytope) by enumerating k-subsets."""
    combos = np.array(list(itertools.combinations(range(g.shape[0]), k)))
    a = g[combos]  # [C, k, k]
    ok = np.abs(np.linalg.det(a)) > 1e-12
    if not ok.any():
        return np.zeros((0, k))
    x = np.linalg.solve(a[ok], h[combos[ok]][..., None])[..., 0]  # [C', k]
    feasible = np.all(x @ g.T <= h + 1e-9 * (1 + np.abs(h)), axis=1)
    return x[feasible]


def group_cuts(l: np.ndarray, u: np.ndarray, octa: dict[tuple[int, int], np.ndarray]) -> np.ndarray:
    """Facets ``[F, 2k + 1]`` (normal over ``(x_1..x_k, y_1..y_k)``, rhs) of the hull of the
    group's ReLU graph over the octahedral region, or an empty array if degenerate."""
    from scipy.spatial import ConvexHull, QhullError

    k = l.size
    g_rows, h_rows = [], []
    for i in range(k):
        e = np.zeros(k)
        e[i] = 1
        g_rows += [e, -e]
        h_rows += [u[i], -l[i]]
    for (i, j), (s_lo, s_hi, d_lo, d_hi) in octa.items():
        s = np.zeros(k)
        s[i] = s[j] = 1
        d = np.zeros(k)
        d[i], d[j] = 1, -1
        g_rows += [s, -s, d, -d]
        h_rows += [s_hi, -s_lo, d_hi, -d_lo]
    g0, h0 = np.array(g_rows), np.array(h_rows)
    points = []
    for sigma in itertools.product((1.0, -1.0), repeat=k):
        # sigma_i x_i >= 0  ->  -sigma_i x_i <= 0
        g = np.vstack([g0, -np.diag(sigma)])
        h = np.concatenate([h0, np.zeros(k)])
        verts = _vertices(g, h, k)
        if verts.size:
            act = np.array(sigma) > 0
            points.append(np.hstack([verts, verts * act]))
    if not points:
        return np.zeros((0, 2 * k + 1))
    pts = np.unique(np.round(np.vstack(points), 12), axis=0)
    try:
        hull = ConvexHull(pts)
    except (QhullError, ValueError):
        return np.zeros((0, 2 * k + 1))
    normals = hull.equations[:, :-1]
    rhs = (pts @ normals.T).max(axis=0)  # exact support of the point set
    rhs = rhs + CUT_SLACK * (1 + np.abs(rhs))
    # Drop facets over one neuron only (already in the single-neuron LP).
    touched = (np.abs(normals[:, :k]) > 1e-9) | (np.abs(normals[:, k:]) > 1e-9)
    keep = touched.sum(axis=1) >= 2
    facets = np.hstack([normals[keep], rhs[keep, None]])
    return np.unique(np.round(facets, 12), axis=0) if facets.size else facets


def multineuron_cuts(problem: Problem, system: ConstraintSystem, bounds: Mapping[str, Bounds],
                     options: MultiNeuronOptions, deadline: float) -> tuple[Any, np.ndarray, int]:
    """Cut rows ``G v <= h`` over the system's variables and the number of groups used."""
    import scipy.sparse as sp

    net = problem.network.to(dtype=torch.float64)
    r = system.relus
    rows, cols, vals, rhs = [], [], [], []
    m = 0
    n_groups = 0
    for layer, node_name in enumerate(r.layer_nodes):
        if time.monotonic() > deadline:
            break
        members = np.nonzero(r.layer == layer)[0]
        if members.size < 2:
            continue
        groups = choose_groups(r.lower[members], r.upper[members], options.k, options.max_neurons,
                               options.max_groups)
        pairs = sorted({(int(members[a]), int(members[b])) for g in groups for a, b in itertools.combinations(g, 2)})
        if not pairs:
            continue
        flat_pairs = [(int(r.index[i]), int(r.index[j])) for i, j in pairs]
        octa_all = octahedral_bounds(node_name, net, bounds, flat_pairs)
        octa_of = {p: octa_all[n] for n, p in enumerate(pairs)}
        for g in groups:
            idx = [int(members[a]) for a in g]
            octa = {(a, b): octa_of[(idx[a], idx[b])] for a, b in itertools.combinations(range(len(idx)), 2)}
            facets = group_cuts(r.lower[idx], r.upper[idx], octa)
            if not facets.size:
                continue
            n_groups += 1
            var_cols = np.concatenate([r.x[idx], r.y[idx]])
            for f in facets:
                nz = np.abs(f[:-1]) > 0
                rows.extend([m] * int(nz.sum()))
                cols.extend(var_cols[nz].tolist())
                vals.extend(f[:-1][nz].tolist())
                rhs.append(f[-1])
                m += 1
    g_mat = sp.csr_matrix((vals, (rows, cols)), shape=(m, system.n))
    return g_mat, np.asarray(rhs, dtype=np.float64), n_groups


class MultiNeuronEngine:
    name = "multineuron"
    capabilities = Capabilities(proves=True, falsifies=False, complete=False, ops=CVXPY_OPS, extra="lp")

    def __init__(self, options: MultiNeuronOptions = MultiNeuronOptions()) -> None:
        if not 2 <= options.k <= 4:
            raise ValueError("multineuron group size k must be 2, 3 or 4")
        self.options = options

    def available(self) -> Support:
        return check_modules(CVXPY_MODULES + (("scipy", "scipy"),), "lp")

    def complete_for(self, problem: Problem) -> bool:
        return False

    def supports(self, problem: Problem) -> Support:
        return supports_encoding(self.name, problem)

    @guarded
    def check(self, problem: Problem, budget: Budget) -> Verdict:
        require_modules(self.name, CVXPY_MODULES + (("scipy", "scipy"),), "lp")
        start = time.monotonic()
        bounds = problem_bounds(problem, budget=budget)
        system = encode(problem, bounds)
        g, h, n_groups = multineuron_cuts(problem, system, bounds, self.options, budget.share(0.5).deadline)
        results = solve_disjuncts(relaxation_model(system, [(g, h)]), self.options.solver, budget.deadline)
        return relaxation_verdict(self.name, system, results, self.options.tolerance, time.monotonic() - start,
                                  cuts=int(g.shape[0]), groups=n_groups, **system.stats())


def make_engine(options: Mapping[str, Any]) -> MultiNeuronEngine:
    return MultiNeuronEngine(from_mapping(MultiNeuronOptions, options, "multineuron"))
