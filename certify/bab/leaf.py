"""A fully split domain of an affine-and-ReLU network is linear on its region: one exact LP per
open disjunct decides it.

On a domain where every ReLU is split, the network is an affine function of the input on the
region the splits define: ``z_j = g_j x + g0_j`` for each split pre-activation (``s_j z_j >= 0``
holds there) and ``C y = A x + a0`` for the unsafe rows (exact CROWN passes, every relaxation
being exact).  For each open disjunct the LP ``min t`` subject to the region and
``A_i x + a0_i - b_i <= t`` (its rows) decides it: ``t*`` above the proof tolerance rules the
disjunct out, an infeasible region is empty (the splits contradict each other), and an optimum
at or below it is a candidate counterexample (checked by the falsifier).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from certify.bab.domains import SplitDomains
from certify.bounds import BackwardContext, backward
from certify.falsify import Falsifier
from certify.linprog import solve_small
from certify.network import Network
from certify.spec_matrix import PROOF_TOLERANCE
from certify.verdict import Counterexample

if TYPE_CHECKING:
    from certify.bab.bounder import Bounder
    from certify.bab.record import Recorder

__all__ = ["decide_leaf"]


def _linear_form(net: Network, target: str, c: torch.Tensor, ctx: BackwardContext) -> tuple[np.ndarray, np.ndarray]:
    """``c . value(target) = A x + bias`` on a region where every ReLU is stable (exact there):
    ``A [S, n_in]``, ``bias [S]`` (numpy, float64)."""
    lb = backward(net, target, c, ctx)
    return lb.A[0].flatten(1).cpu().numpy(), lb.bias[0].cpu().numpy()


@dataclass(frozen=True, slots=True)
class Region:
    """The rows ``a x <= b`` of a region the splits define (``-s_j z_j <= 0`` per split neuron),
    with each row's neuron (global id, ``ids``) and side ``s_j`` (``sides``)."""

    a: np.ndarray
    b: np.ndarray
    ids: np.ndarray
    sides: np.ndarray


def _region(bounder: Bounder, d: SplitDomains, ctx: BackwardContext) -> Region:
    """The region of the one domain in ``d``."""
    net, layout = bounder.net, bounder.layout
    dtype, device = d.lo.dtype, d.lo.device
    a_ub: list[np.ndarray] = [np.zeros((0, net.input_size))]
    b_ub: list[np.ndarray] = [np.zeros(0)]
    ids: list[np.ndarray] = [np.zeros(0, np.int64)]
    sides: list[np.ndarray] = [np.zeros(0, np.int8)]
    for k, (relu, pre) in enumerate(zip(layout.acts, layout.pre)):  # all ReLUs: leaves are exact only then
        s = layout.part(d.splits, k)[0]
        idx = (s != 0).nonzero().flatten()
        if idx.numel() == 0:
            continue
        eye = torch.zeros(idx.numel(), relu.size, dtype=dtype, device=device)
        eye[torch.arange(idx.numel()), idx] = 1.0
        g, g0 = _linear_form(net, pre, eye.reshape(1, idx.numel(), *relu.shape), ctx)
        sg = -s[idx].cpu().numpy().astype(np.float64)  # active (s=+1): -z <= 0
        a_ub.append(sg[:, None] * g)
        b_ub.append(-sg * g0)
        ids.append(layout.offsets[k] + idx.cpu().numpy().astype(np.int64))
        sides.append(s[idx].cpu().numpy().astype(np.int8))
    return Region(np.concatenate(a_ub), np.concatenate(b_ub), np.concatenate(ids), np.concatenate(sides))


def decide_leaf(bounder: Bounder, falsify: Falsifier, d: SplitDomains, open_: torch.Tensor,
                recorder: Recorder | None = None) -> tuple[bool, Counterexample | None]:
    """Decide one fully split domain (``d`` holds one row) on its open disjuncts ``open_ [K]``.

    Returns ``(proved, counterexample)``; ``(False, None)`` when the LP is inconclusive.  A
    proof goes to the ``recorder`` as the LP's multipliers: on the disjunct's rows (its
    weights) and on the split constraints (their betas); an empty region by the multipliers
    of the split constraints alone, from an LP that minimizes their largest violation.
    """
    net, spec = bounder.net, bounder.spec
    ctx = bounder.context(d.lo, d.hi, {}, d.box)
    box = ctx.bounds[net.input.name]
    n_in = net.input_size
    region = _region(bounder, d, ctx)
    base_a, base_b = np.hstack([region.a, np.zeros((region.a.shape[0], 1))]), region.b
    out_a, out_b = _linear_form(net, net.output, spec.C.reshape(1, -1, *net.output_shape), ctx)
    rhs, group = spec.b.cpu().numpy(), spec.group.cpu().numpy()
    bounds = [(float(a), float(b)) for a, b in zip(box.lower.flatten().tolist(), box.upper.flatten().tolist())]
    bounds.append((None, None))
    cost = np.zeros(n_in + 1)
    cost[-1] = 1.0
    proved = True
    node = int(d.node[0])
    for k in range(spec.n_groups):
        if not bool(open_[k]):
            continue
        rows = np.nonzero(group == k)[0]
        # C_i y - b_i - t <= 0  with  C_i y = out_a_i x + out_b_i
        ra = np.hstack([out_a[rows], -np.ones((rows.size, 1))])
        res = solve_small(cost, np.vstack([base_a, ra]), np.concatenate([base_b, rhs[rows] - out_b[rows]]), bounds)
        if res.status == 2:  # infeasible: the domain is empty
            if recorder is not None:
                _record_empty(recorder, node, open_, region, bounds[:-1])
            return True, None
        if res.status != 0 or res.x is None:
            proved = False
            continue
        if float(res.x[-1]) > PROOF_TOLERANCE * (1 + float(np.abs(rhs[rows]).max())) + 1e-9:
            if recorder is not None and res.duals is not None:
                n_base = base_a.shape[0]
                recorder.close_lp(node, k, res.duals[n_base:], (region.ids, region.sides, res.duals[:n_base]))
            continue
        proved = False
        x = torch.as_tensor(res.x[:-1], dtype=box.lower.dtype, device=box.lower.device).reshape(1, -1)
        cex = falsify.search(x)
        if cex is not None:
            return False, cex
    return proved, None


def _record_empty(recorder: Recorder, node: int, open_: torch.Tensor, region: Region,
                  bounds: list[tuple[float | None, float | None]]) -> None:
    """The ``region`` (``a x <= b``) inside the box is empty: ``min s`` with ``a x - s <= b`` has a
    positive optimum, and its multipliers (summing to 1) show it for every open disjunct."""
    a, b = region.a, region.b
    n = a.shape[1]
    cost = np.zeros(n + 1)
    cost[-1] = 1.0
    res = solve_small(cost, np.hstack([a, -np.ones((a.shape[0], 1))]), b, [*bounds, (None, None)])
    if res.status != 0 or res.x is None or res.duals is None or float(res.x[-1]) <= 0:
        return  # no proof of emptiness to record: the checker will reject the certificate
    for k in open_.nonzero().flatten().tolist():
        recorder.close_lp(node, k, None, (region.ids, region.sides, res.duals))
