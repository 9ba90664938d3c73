"""What a search writes into a proof certificate (:mod:`certify.proof.certificate`): its tree
of regions, the parameters of each bound that closed a disjunct, and the slopes of the
intermediate bounds that subtrees inherit.

A :class:`Recorder` is handed to a search (or ``None``: nothing is recorded).  Node ids travel
with the domains (:attr:`~certify.bab.domains.Batch.node`); the recorder turns the search's
tensors into the certificate's flat arrays.  Sub-searches that end without settling their
region (a hand-over that gave up a box) are :meth:`Recorder.abandon`\\ ed and pruned when the
certificate is built.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import torch

from certify.bounds import Bounds, NodeSlopes
from certify.budget import Budget
from certify.network import Network, Op
from certify.problem import Problem
from certify.proof.certificate import Certificate, CertificateBuilder, Closures, Edge, problem_digest
from certify.spec_matrix import SpecMatrix

__all__ = ["CHAIN_OPS", "Recorder", "uncertifiable"]

#: The IR ops a certificate covers: chains of affine maps and ReLUs.
CHAIN_OPS: frozenset[Op] = frozenset({Op.INPUT, Op.LINEAR, Op.CONV, Op.AFFINE, Op.RESHAPE, Op.RELU})


def uncertifiable(net: Network) -> str:
    """Why ``net`` cannot have a certificate ("" when it can): the format covers chains (every
    node reads the one before it) of affine maps and ReLUs."""
    other = sorted(op.value for op in net.ops() - CHAIN_OPS)
    if other:
        return f"certificates cover chains of affine maps and ReLUs; this network has {', '.join(other)}"
    for prev, node in zip(net.nodes, net.nodes[1:]):
        if tuple(node.inputs) != (prev.name,):
            return f"certificates cover chains; node {node.name!r} does not read the node before it"
    return ""


def search_dtype(requested: torch.dtype, net: Network, budget: Budget) -> torch.dtype:
    """The precision a search may bound in: float32 bounds are not rounded outward, so a search
    asked to run in float32 does only where each HOLDS gets a certificate that the checker
    re-checks in rigorous arithmetic (``budget.proofs`` and ``budget.checked``, a network the
    format covers); elsewhere it runs in float64."""
    if requested == torch.float64 or (budget.proofs and budget.checked and not uncertifiable(net)):
        return requested
    return torch.float64


class Recorder:
    """Collects one search's proof tree.  ``relus`` are the network's ReLU nodes in order: global
    neuron ``offset[k] + i`` is neuron ``i`` (flat) of ReLU ``k``.  A search that works on one
    disjunct alone (its own one-disjunct matrix) records through :meth:`alone`, which shares the
    tree and maps that search's rows back to the problem's."""

    def __init__(self, problem: Problem) -> None:
        net = problem.network
        self.relus = [n for n in net.nodes if n.op is Op.RELU]
        sizes = [n.size for n in self.relus]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.rows = np.array([hs.A.shape[0] for hs in problem.unsafe], dtype=np.int64)
        self.digest = problem_digest(problem.box.lower, problem.box.upper, [(hs.A, hs.b) for hs in problem.unsafe])
        self.builder = CertificateBuilder(len(problem.unsafe))
        self._abandoned: list[np.ndarray] = []
        # the search's disjunct k is the problem's disjunct[k]; its row r is local row local[r] there
        self.disjunct = np.arange(len(self.rows))
        self.local = np.concatenate([np.arange(r) for r in self.rows]).astype(np.int64)

    def alone(self, disjunct: int, parent: int = 0) -> tuple[Recorder, int]:
        """A recorder for a search of ``disjunct`` alone (``spec.disjunct(disjunct)``), and the
        SAME child of ``parent`` it starts from."""
        mask = np.zeros(len(self.rows), dtype=bool)
        mask[disjunct] = True
        view = copy.copy(self)
        view.disjunct = np.array([disjunct])
        view.local = np.arange(int(self.rows[disjunct]), dtype=np.int64)
        return view, self.builder.same(parent, mask)

    @property
    def total(self) -> int:
        return int(self.offsets[-1])

    # -- regions ---------------------------------------------------------------------------

    def split_inputs(self, parents: torch.Tensor, dims: torch.Tensor, points: torch.Tensor,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Children ``x[dim] <= point`` and ``x[dim] >= point`` of each parent: their node ids."""
        low, high = self.builder.split(_np(parents), Edge.INPUT_LOW, _np(dims), _np(points).astype(np.float64))
        return _t(low, parents), _t(high, parents)

    def split_neurons(self, parents: torch.Tensor, neurons: torch.Tensor, points: torch.Tensor,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Children ``z[neuron] <= point`` and ``z[neuron] >= point`` (global neuron ids)."""
        low, high = self.builder.split(_np(parents), Edge.NEURON_LOW, _np(neurons), _np(points).astype(np.float64))
        return _t(low, parents), _t(high, parents)

    def fork(self, nodes: torch.Tensor, open_: torch.Tensor) -> torch.Tensor:
        """A SAME child of each of ``nodes [B]`` for its ``open_ [B, K]`` disjuncts (the search's):
        the new node ids.  A search that bounds a region again with other intermediate bounds
        records that under a fork, so that the closures made before keep the bounds they were
        made with (CROWN is not monotone in its intermediate bounds)."""
        masks = np.zeros((nodes.numel(), len(self.rows)), dtype=bool)
        masks[:, self.disjunct] = _np(open_).astype(bool)
        forks = [self.builder.same(int(n), m) for n, m in zip(_np(nodes).tolist(), masks)]
        return torch.tensor(forks, dtype=torch.long, device=nodes.device)

    def abandon(self, nodes: torch.Tensor) -> None:
        """Subtrees that do not settle their region (pruned from the certificate)."""
        self._abandoned.append(_np(nodes).astype(np.int64))

    # -- closures --------------------------------------------------------------------------

    def close(self, nodes: torch.Tensor, lower: torch.Tensor, newly: torch.Tensor, spec: SpecMatrix,
              alpha: torch.Tensor | None = None, unstable: torch.Tensor | None = None,
              beta: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Record the disjuncts ``newly [B, K]`` (bool) closed on ``nodes [B]`` by the rows'
        lower bounds ``lower [B, S]``: per disjunct its best row, with that row's ReLU slopes
        ``alpha [B, S, total]`` on the ``unstable [B, total]`` neurons (None: CROWN's adaptive
        slopes) and multipliers ``beta = (values [B, S, total], sides [B, total])`` where both
        are non-zero.  ``spec`` is the search's matrix (see :meth:`alone`).  Seven parameters:
        the nodes, their bounds, what closed and the matrix are needed; slopes, where they are
        free and multipliers are optional, as each search has a different subset of them."""
        pairs = newly.nonzero()
        if pairs.numel() == 0:
            return
        b, k = pairs[:, 0], pairs[:, 1]
        in_k = spec.group.unsqueeze(0) == k.unsqueeze(1)  # [M, S]
        row = torch.where(in_k, spec.margins(lower)[b], torch.full_like(in_k, -torch.inf, dtype=lower.dtype))
        row = row.argmax(dim=1)  # [M]: the best row of each closed disjunct
        disjunct = self.disjunct[_np(k)]
        counts = self.rows[disjunct]
        ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        weights = np.zeros(int(ptr[-1]))
        weights[ptr[:-1] + self.local[_np(row)]] = 1.0
        empty = (np.zeros(b.numel() + 1, np.int64), np.zeros(0, np.int64), torch.zeros(0))
        a_ptr, a_idx, a_val = empty if alpha is None or unstable is None else _sparse(unstable[b], alpha[b, row])
        if beta is None:
            b_ptr, b_idx, b_val, b_side = *empty, np.zeros(0, np.int8)
        else:
            values, sides = beta
            picked = values[b, row]
            mask = (picked > 0) & (sides[b] != 0)
            b_ptr, b_idx, b_val = _sparse(mask, picked)
            b_side = _np(_sparse(mask, sides[b])[2]).astype(np.int8)
        self.builder.close_many(Closures(
            node=_np(nodes[b]).astype(np.int64), disjunct=disjunct.astype(np.int64), weights_ptr=ptr, weights=weights,
            alpha_ptr=a_ptr, alpha_index=a_idx, alpha=_np(a_val).astype(np.float32),
            beta_ptr=b_ptr, beta_index=b_idx, beta_side=b_side, beta_point=np.zeros(b_idx.size),
            beta=_np(b_val).astype(np.float64)))

    def close_lp(self, node: int, k: int, weights: np.ndarray | None, beta: tuple[np.ndarray, np.ndarray, np.ndarray],
                 ) -> None:
        """Disjunct ``k`` (the search's) closed on ``node`` by LP multipliers: ``weights`` on its
        rows (None: all zero, the region is empty) and ``beta = (global ids, sides, values)`` on
        the split constraints."""
        disjunct = int(self.disjunct[k])
        w = np.zeros(int(self.rows[disjunct])) if weights is None else np.asarray(weights, dtype=np.float64)
        ids, sides, values = beta
        keep = values > 0
        self.builder.close(node, disjunct, w, None, (ids[keep], sides[keep], np.zeros(int(keep.sum())), values[keep]))

    def flat_alphas(self, alphas: Mapping[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        """Per-row ReLU slopes ``{relu name: [B, S, *shape]}`` as ``[B, S, total]`` in global
        neuron order (a ReLU without slopes gets zeros: it has no unstable neuron)."""
        parts = []
        for r in self.relus:
            a = alphas.get(r.name)
            parts.append(like.new_zeros(*like.shape[:2], r.size) if a is None else a.flatten(2).to(like.dtype))
        return torch.cat(parts, dim=2) if parts else like.new_zeros(*like.shape[:2], 0)

    def unstable(self, bounds: Mapping[str, Bounds]) -> torch.Tensor:
        """``[B, total]``: the ReLU neurons whose input bounds straddle 0."""
        first = next(iter(bounds.values())).lower
        parts = [(bounds[r.inputs[0]].lower.flatten(1) < 0) & (bounds[r.inputs[0]].upper.flatten(1) > 0)
                 for r in self.relus]
        return torch.cat(parts, dim=1) if parts else torch.zeros(first.shape[0], 0, dtype=torch.bool,
                                                                 device=first.device)

    # -- slopes ----------------------------------------------------------------------------

    def slopes(self, nodes: torch.Tensor, found: Mapping[str, NodeSlopes], net: Network) -> None:
        """The intermediate slopes ``found`` (per ReLU input node, boxes ``[NB]`` in the order
        of ``nodes [NB]``) for each node's subtree."""
        pre_of = {r.inputs[0]: k for k, r in enumerate(self.relus)}
        for name, s in found.items():
            if name not in pre_of:
                continue
            layer = pre_of[name]
            earlier = self.relus[:layer]
            for box, node in enumerate(_np(nodes).tolist()):
                rows = s.rows[box]
                r = rows.shape[0]
                lower, upper = [], []
                for relu in earlier:
                    a = s.alphas.get(relu.name)
                    if a is None:  # a ReLU alpha-CROWN did not relax (stable everywhere): any slope
                        lower.append(np.zeros((r, relu.size)))
                        upper.append(np.zeros((r, relu.size)))
                        continue
                    flat = a[box].reshape(2 * r, -1)
                    lower.append(_np(flat[:r]))
                    upper.append(_np(flat[r:]))
                if not earlier:
                    continue
                uniq, first = np.unique(_np(rows), return_index=True)  # padded by repeats
                self.builder.slopes(node, layer, uniq, np.concatenate(lower, axis=1)[first],
                                    np.concatenate(upper, axis=1)[first])

    # -- the certificate -------------------------------------------------------------------

    def build(self) -> Certificate:
        """The certificate (model digest empty: the caller, who read the model, stamps it)."""
        cert = self.builder.build("", self.digest, np.diff(self.offsets), self.rows)
        return prune(cert, np.concatenate(self._abandoned) if self._abandoned else np.zeros(0, np.int64))


def prune(cert: Certificate, abandoned: np.ndarray) -> Certificate:
    """``cert`` without the subtrees rooted at ``abandoned`` node ids (ids renumbered)."""
    if abandoned.size == 0:
        return cert
    n = cert.n_nodes
    keep = np.ones(n, dtype=bool)
    keep[abandoned] = False
    for i in range(1, n):  # parents come first
        if keep[i] and not keep[cert.parent[i]]:
            keep[i] = False
    new_id = np.cumsum(keep) - 1
    sel = np.nonzero(keep)[0]
    parent = np.where(cert.parent[sel] >= 0, new_id[np.maximum(cert.parent[sel], 0)], -1)
    c_keep = keep[cert.closure_node]
    s_keep = keep[cert.slope_node]
    same_keep = keep[cert.same_node]
    return Certificate(
        model_sha256=cert.model_sha256, problem_sha256=cert.problem_sha256, relu_sizes=cert.relu_sizes,
        rows_per_disjunct=cert.rows_per_disjunct, parent=parent.astype(np.int64), edge=cert.edge[sel],
        index=cert.index[sel], point=cert.point[sel], same_node=new_id[cert.same_node[same_keep]].astype(np.int64),
        same_mask=cert.same_mask[same_keep], closure_node=new_id[cert.closure_node[c_keep]].astype(np.int64),
        closure_disjunct=cert.closure_disjunct[c_keep],
        **_ragged(cert.weights_ptr, c_keep, "weights_ptr", dict(weights=cert.weights)),
        **_ragged(cert.alpha_ptr, c_keep, "alpha_ptr", dict(alpha_index=cert.alpha_index, alpha=cert.alpha)),
        **_ragged(cert.beta_ptr, c_keep, "beta_ptr", dict(beta_index=cert.beta_index, beta_side=cert.beta_side,
                  beta_point=cert.beta_point, beta=cert.beta)),
        slope_node=new_id[cert.slope_node[s_keep]].astype(np.int64), slope_layer=cert.slope_layer[s_keep],
        **_ragged(cert.slope_rows_ptr, s_keep, "slope_rows_ptr", dict(slope_neurons=cert.slope_neurons)),
        **_ragged(cert.slope_values_ptr, s_keep, "slope_values_ptr",
                  dict(slope_lower=cert.slope_lower, slope_upper=cert.slope_upper)),
    )


def _ragged(ptr: np.ndarray, keep: np.ndarray, name: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The rows ``keep`` of ragged ``arrays`` sharing pointer ``ptr``: the new arrays and their
    pointer (as ``name``)."""
    counts = np.diff(ptr)[keep]
    starts = ptr[:-1][keep]
    take = (np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)]) if counts.size
            else np.zeros(0, np.int64)).astype(np.int64)
    out = {k: v[take] for k, v in arrays.items()}
    out[name] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return out


def _sparse(mask: torch.Tensor, values: torch.Tensor) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Per row of ``mask, values [M, n]`` the masked entries: ``(ptr [M + 1], column ids,
    values)``, row-major."""
    idx = mask.nonzero()
    counts = torch.bincount(idx[:, 0], minlength=mask.shape[0]) if idx.numel() else mask.new_zeros(mask.shape[0],
                                                                                                 dtype=torch.long)
    ptr = np.concatenate([[0], np.cumsum(_np(counts))]).astype(np.int64)
    return ptr, _np(idx[:, 1]).astype(np.int64), values[idx[:, 0], idx[:, 1]]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _t(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.long, device=like.device)
