"""The proof certificate: a tree of regions that covers a problem's input box, and for each
disjunct of the unsafe set the parameters that rule it out on some region, so that a checker
can recompute every bound with fixed parameters (format version 1).

A problem is ``exists x in box, k: A_k y <= b_k`` (``y`` the network's output).  The network is
a chain of affine maps and ReLUs; its ReLU layers are numbered ``0 .. L-1`` in order and their
neurons are numbered globally: neuron ``i`` of layer ``k`` (flat, C order, batch dimension
dropped) is ``offset[k] + i`` where ``offset`` is the running sum of :attr:`relu_sizes`.
``z_j`` is the pre-activation (the ReLU's input) of global neuron ``j``.

**Regions.**  Node 0 is the root: the problem's box, no constraint.  Every other node has a
parent and an :class:`Edge` that says how its region derives from the parent's:

* ``INPUT_LOW`` / ``INPUT_HIGH``: the parent's box with ``x[index] <= point`` / ``>= point``
  (``index`` flat over the input, C order);
* ``NEURON_LOW`` / ``NEURON_HIGH``: the parent's region with ``z[index] <= point`` /
  ``>= point`` (``index`` a global neuron id);
* ``SAME``: the parent's region, for the disjuncts in the node's mask only (the search ran on
  some disjuncts apart).

A node's children cover it: either exactly two children with the ``LOW`` and ``HIGH`` edges
of the same kind, index and point, or any number of ``SAME`` children.

**Closures.**  A closure rules disjunct ``k`` out on a node's region with

* ``weights`` (``>= 0``, one per row of disjunct ``k``): the objective is
  ``f(x) = sum_i w_i (A_k[i] . y - b_k[i])``; if ``f > 0`` on the region, some row is positive
  at every point there, so no point of the region is unsafe for ``k`` (all-zero weights are
  allowed: then the multipliers alone must show the region is empty);
* ``alpha``: lower slopes in ``[0, 1]`` for unstable ReLU neurons (``relu(z) >= alpha z``);
  a neuron not listed takes CROWN's adaptive slope (``1`` where ``u >= -l``, else ``0``);
* ``beta``: multipliers ``>= 0`` on neuron constraints ``side * (z_j - point) >= 0`` that hold
  on the region (``side`` ``+1``: ``z_j >= point``; ``-1``: ``z_j <= point``); the bound is that
  of ``f(x) - sum beta side (z_j - point)``, which is below ``f`` on the region.

A disjunct closed at a node stays closed below it.  Every leaf must leave no disjunct of its
region open.

**Slopes.**  A node may carry lower slopes for bounding the pre-activations of ReLU layer
``layer`` (the ``neurons`` listed, flat within that layer): row ``r`` of ``lower`` holds the
slopes of all earlier ReLU neurons (global ids ``0 .. offset[layer]-1``) for the lower bound of
``z[neurons[r]]``, ``upper`` those for its upper bound.  A node's slopes hold for its subtree
until a descendant brings its own or an INPUT edge starts a new box (its bounds are inherited,
its slopes are not: a sub-box is bounded afresh with CROWN's adaptive slopes).

Stored as one compressed ``.npz`` (:meth:`Certificate.save`); the arrays are described on
:class:`Certificate`.  This module needs numpy only.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import numpy as np

__all__ = ["FORMAT_VERSION", "Certificate", "CertificateBuilder", "CertificateError", "Closures", "Edge",
           "model_digest", "problem_digest"]

FORMAT_VERSION = 1


class CertificateError(ValueError):
    """A certificate file that cannot be read (missing arrays, wrong types or shapes)."""


class Edge(IntEnum):
    """How a node's region derives from its parent's (see the module docstring)."""

    ROOT = 0
    INPUT_LOW = 1
    INPUT_HIGH = 2
    NEURON_LOW = 3
    NEURON_HIGH = 4
    SAME = 5


def model_digest(data: bytes) -> str:
    """SHA-256 of the model's ONNX bytes (decompressed)."""
    return hashlib.sha256(data).hexdigest()


def problem_digest(lower: np.ndarray, upper: np.ndarray, unsafe: Sequence[tuple[np.ndarray, np.ndarray]]) -> str:
    """SHA-256 of the box (float64) and every disjunct's ``A, b`` (float64), in order."""
    h = hashlib.sha256()
    for a in (lower, upper):
        arr = np.ascontiguousarray(np.asarray(a, dtype=np.float64).reshape(-1))
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    for A, b in unsafe:
        for a in (A, b):
            arr = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
            h.update(str(arr.shape).encode())
            h.update(arr.tobytes())
    return h.hexdigest()


#: Every array of the file: name -> (dtype, number of dimensions).
ARRAYS: dict[str, tuple[type, int]] = {
    "relu_sizes": (np.int64, 1),
    "rows_per_disjunct": (np.int64, 1),
    "parent": (np.int64, 1),
    "edge": (np.int8, 1),
    "index": (np.int64, 1),
    "point": (np.float64, 1),
    "same_node": (np.int64, 1),
    "same_mask": (np.bool_, 2),
    "closure_node": (np.int64, 1),
    "closure_disjunct": (np.int64, 1),
    "weights_ptr": (np.int64, 1),
    "weights": (np.float64, 1),
    "alpha_ptr": (np.int64, 1),
    "alpha_index": (np.int64, 1),
    "alpha": (np.float32, 1),
    "beta_ptr": (np.int64, 1),
    "beta_index": (np.int64, 1),
    "beta_side": (np.int8, 1),
    "beta_point": (np.float64, 1),
    "beta": (np.float64, 1),
    "slope_node": (np.int64, 1),
    "slope_layer": (np.int64, 1),
    "slope_rows_ptr": (np.int64, 1),
    "slope_neurons": (np.int64, 1),
    "slope_values_ptr": (np.int64, 1),
    "slope_lower": (np.float32, 1),
    "slope_upper": (np.float32, 1),
}


@dataclass(frozen=True, eq=False)
class Certificate:
    """A proof tree as flat arrays (``N`` nodes, ``M`` closures, ``Q`` slope blocks).

    * ``relu_sizes [L]``, ``rows_per_disjunct [K]``: the network and unsafe set it is for;
    * ``parent [N]`` (``-1`` for the root), ``edge [N]`` (:class:`Edge`), ``index [N]``,
      ``point [N]``: the regions (``index``/``point`` unused, ``-1``/``0``, for ROOT and SAME);
    * ``same_node [P]``, ``same_mask [P, K]``: the disjuncts of each SAME node;
    * closure ``c`` is for node ``closure_node[c]``, disjunct ``closure_disjunct[c]``, with
      ``weights[weights_ptr[c]:weights_ptr[c+1]]`` (one per row of the disjunct),
      ``alpha_index/alpha[alpha_ptr[c]:alpha_ptr[c+1]]`` and
      ``beta_index/beta_side/beta_point/beta[beta_ptr[c]:beta_ptr[c+1]]``;
    * slope block ``q`` is for node ``slope_node[q]`` and ReLU layer ``slope_layer[q]``: its
      ``R`` neurons are ``slope_neurons[slope_rows_ptr[q]:slope_rows_ptr[q+1]]`` and
      ``slope_lower/slope_upper[slope_values_ptr[q]:slope_values_ptr[q+1]]`` are ``[R, E]``
      row-major, ``E = offset[slope_layer[q]]`` (all earlier ReLU neurons).
    """

    model_sha256: str
    problem_sha256: str
    relu_sizes: np.ndarray
    rows_per_disjunct: np.ndarray
    parent: np.ndarray
    edge: np.ndarray
    index: np.ndarray
    point: np.ndarray
    same_node: np.ndarray
    same_mask: np.ndarray
    closure_node: np.ndarray
    closure_disjunct: np.ndarray
    weights_ptr: np.ndarray
    weights: np.ndarray
    alpha_ptr: np.ndarray
    alpha_index: np.ndarray
    alpha: np.ndarray
    beta_ptr: np.ndarray
    beta_index: np.ndarray
    beta_side: np.ndarray
    beta_point: np.ndarray
    beta: np.ndarray
    slope_node: np.ndarray
    slope_layer: np.ndarray
    slope_rows_ptr: np.ndarray
    slope_neurons: np.ndarray
    slope_values_ptr: np.ndarray
    slope_lower: np.ndarray
    slope_upper: np.ndarray
    version: int = FORMAT_VERSION

    @property
    def n_nodes(self) -> int:
        return int(self.parent.shape[0])

    @property
    def n_closures(self) -> int:
        return int(self.closure_node.shape[0])

    @property
    def offsets(self) -> np.ndarray:
        """``[L + 1]``: global id of each ReLU layer's first neuron, then the total."""
        return np.concatenate([[0], np.cumsum(self.relu_sizes)]).astype(np.int64)

    def leaves(self) -> int:
        """Nodes without children."""
        has_child = np.zeros(self.n_nodes, dtype=bool)
        has_child[self.parent[self.parent >= 0]] = True
        return int((~has_child).sum())

    def save(self, path: str | Path) -> int:
        """Write the certificate (compressed npz); returns its size in bytes."""
        arrays = {name: getattr(self, name) for name in ARRAYS}
        meta = np.array([self.version, self.model_sha256, self.problem_sha256], dtype=object).astype(str)
        buf = io.BytesIO()
        np.savez_compressed(buf, meta=meta, **arrays)
        data = buf.getvalue()
        Path(path).write_bytes(data)
        return len(data)

    @staticmethod
    def load(path: str | Path) -> Certificate:
        """Read a certificate written by :meth:`save`; :class:`CertificateError` if the file is
        not one (it is checked for types and shapes, not for meaning: the checker does that)."""
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                data = {name: z[name] for name in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise CertificateError(f"{path}: not a certificate file ({e})") from None
        missing = sorted(({"meta"} | set(ARRAYS)) - set(data))
        if missing:
            raise CertificateError(f"{path}: missing arrays {', '.join(missing)}")
        meta = data.pop("meta")
        if meta.shape != (3,) or meta.dtype.kind != "U":
            raise CertificateError(f"{path}: malformed header")
        try:
            version = int(meta[0])
        except ValueError:
            raise CertificateError(f"{path}: malformed version {meta[0]!r}") from None
        if version != FORMAT_VERSION:
            raise CertificateError(f"{path}: format version {version}; this checker reads {FORMAT_VERSION}")
        arrays = {}
        for name, (dtype, ndim) in ARRAYS.items():
            a = data[name]
            if a.dtype != np.dtype(dtype) or a.ndim != ndim:
                raise CertificateError(f"{path}: array {name} is {a.dtype}[{a.ndim}d], expected "
                                       f"{np.dtype(dtype)}[{ndim}d]")
            arrays[name] = a
        cert = Certificate(model_sha256=str(meta[1]), problem_sha256=str(meta[2]), version=version, **arrays)
        cert.check_shapes(str(path))
        return cert

    def check_shapes(self, where: str) -> None:
        """:class:`CertificateError` (naming ``where``) unless the arrays' lengths and pointers
        fit together."""
        n, m, q = self.n_nodes, self.n_closures, int(self.slope_node.shape[0])
        k = int(self.rows_per_disjunct.shape[0])
        same = (("edge", n), ("index", n), ("point", n), ("closure_disjunct", m), ("weights_ptr", m + 1),
                ("alpha_ptr", m + 1), ("beta_ptr", m + 1), ("slope_layer", q), ("slope_rows_ptr", q + 1),
                ("slope_values_ptr", q + 1), ("alpha", self.alpha_index.shape[0]),
                ("beta_side", self.beta_index.shape[0]), ("beta_point", self.beta_index.shape[0]),
                ("beta", self.beta_index.shape[0]), ("slope_upper", self.slope_lower.shape[0]))
        for name, size in same:
            if getattr(self, name).shape[0] != size:
                raise CertificateError(f"{where}: array {name} has {getattr(self, name).shape[0]} entries, "
                                       f"expected {size}")
        if self.same_mask.shape != (self.same_node.shape[0], k):
            raise CertificateError(f"{where}: same_mask has shape {self.same_mask.shape}, expected "
                                   f"{(self.same_node.shape[0], k)}")
        for ptr, data in (("weights_ptr", "weights"), ("alpha_ptr", "alpha_index"), ("beta_ptr", "beta_index"),
                          ("slope_rows_ptr", "slope_neurons"), ("slope_values_ptr", "slope_lower")):
            p = getattr(self, ptr)
            if p[0] != 0 or p[-1] != getattr(self, data).shape[0] or np.any(np.diff(p) < 0):
                raise CertificateError(f"{where}: {ptr} does not index {data}")


@dataclass
class CertificateBuilder:
    """Collects a proof tree while a search runs (appends only), then freezes it with
    :meth:`build`.  Node ids are handed out in order; the root is node 0."""

    n_disjuncts: int
    _parent: list[np.ndarray] = field(default_factory=lambda: [np.array([-1], dtype=np.int64)])
    _edge: list[np.ndarray] = field(default_factory=lambda: [np.array([Edge.ROOT], dtype=np.int8)])
    _index: list[np.ndarray] = field(default_factory=lambda: [np.array([-1], dtype=np.int64)])
    _point: list[np.ndarray] = field(default_factory=lambda: [np.zeros(1)])
    _size: int = 1
    _same: list[tuple[int, np.ndarray]] = field(default_factory=list)
    _closures: list[Closures] = field(default_factory=list)
    _slopes: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self._size

    def split(self, parents: np.ndarray, low_edge: Edge, index: np.ndarray, point: np.ndarray,
              ) -> tuple[np.ndarray, np.ndarray]:
        """Split each of ``parents [B]`` in two along ``index [B]`` at ``point [B]`` (``low_edge``:
        ``INPUT_LOW`` or ``NEURON_LOW``); returns the ids of the low and the high children."""
        if low_edge not in (Edge.INPUT_LOW, Edge.NEURON_LOW):
            raise ValueError(f"not a low edge: {low_edge!r}")
        parents = np.asarray(parents, dtype=np.int64).reshape(-1)
        b = parents.shape[0]
        index = np.asarray(index, dtype=np.int64).reshape(b)
        point = np.asarray(point, dtype=np.float64).reshape(b)
        low = np.arange(self._size, self._size + b, dtype=np.int64)
        high = low + b
        self._parent += [parents, parents]
        self._edge += [np.full(b, low_edge, dtype=np.int8), np.full(b, low_edge + 1, dtype=np.int8)]
        self._index += [index, index]
        self._point += [point, point]
        self._size += 2 * b
        return low, high

    def same(self, parent: int, mask: np.ndarray) -> int:
        """A child with ``parent``'s region for the disjuncts in ``mask [K]`` only."""
        node = self._size
        self._parent.append(np.array([parent], dtype=np.int64))
        self._edge.append(np.array([Edge.SAME], dtype=np.int8))
        self._index.append(np.array([-1], dtype=np.int64))
        self._point.append(np.zeros(1))
        self._same.append((node, np.asarray(mask, dtype=bool).reshape(self.n_disjuncts)))
        self._size += 1
        return node

    def close(self, node: int, disjunct: int, weights: np.ndarray, alpha: tuple[np.ndarray, np.ndarray] | None = None,
              beta: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
        """Disjunct ``disjunct`` is ruled out on ``node`` by ``weights`` on its rows, the lower
        slopes ``alpha = (global ids, values)`` and the multipliers ``beta = (global ids, sides,
        points, values)`` (see the module docstring)."""
        a_idx, a_val = (np.zeros(0, np.int64), np.zeros(0, np.float32)) if alpha is None else alpha
        b_idx, b_side, b_pt, b_val = ((np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros(0), np.zeros(0))
                                      if beta is None else beta)
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        a_idx, b_idx = np.asarray(a_idx).reshape(-1), np.asarray(b_idx).reshape(-1)
        self.close_many(Closures(
            node=np.array([node]), disjunct=np.array([disjunct]), weights_ptr=np.array([0, w.size]), weights=w,
            alpha_ptr=np.array([0, a_idx.size]), alpha_index=a_idx, alpha=np.asarray(a_val).reshape(-1),
            beta_ptr=np.array([0, b_idx.size]), beta_index=b_idx, beta_side=np.asarray(b_side).reshape(-1),
            beta_point=np.asarray(b_pt).reshape(-1), beta=np.asarray(b_val).reshape(-1)))

    def close_many(self, c: Closures) -> None:
        """Several closures at once (ragged arrays with their own pointers, from 0)."""
        self._closures.append(c)

    def slopes(self, node: int, layer: int, neurons: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        """Slopes at ``node`` for bounding ``neurons [R]`` of ReLU layer ``layer``: ``lower,
        upper [R, E]`` over all earlier ReLU neurons."""
        neurons = np.asarray(neurons, dtype=np.int64).reshape(-1)
        r = neurons.shape[0]
        self._slopes.append((int(node), int(layer), neurons, np.asarray(lower, dtype=np.float32).reshape(r, -1),
                             np.asarray(upper, dtype=np.float32).reshape(r, -1)))

    def build(self, model_sha256: str, problem_sha256: str, relu_sizes: Sequence[int],
              rows_per_disjunct: Sequence[int]) -> Certificate:
        c = self._closures
        s = self._slopes
        return Certificate(
            model_sha256=model_sha256, problem_sha256=problem_sha256,
            relu_sizes=np.asarray(relu_sizes, dtype=np.int64).reshape(-1),
            rows_per_disjunct=np.asarray(rows_per_disjunct, dtype=np.int64).reshape(-1),
            parent=np.concatenate(self._parent), edge=np.concatenate(self._edge),
            index=np.concatenate(self._index), point=np.concatenate(self._point),
            same_node=np.array([n for n, _ in self._same], dtype=np.int64),
            same_mask=(np.stack([m for _, m in self._same]) if self._same
                       else np.zeros((0, self.n_disjuncts), dtype=bool)),
            closure_node=_cat([x.node for x in c], np.int64), closure_disjunct=_cat([x.disjunct for x in c], np.int64),
            weights_ptr=_join_ptr([x.weights_ptr for x in c]), weights=_cat([x.weights for x in c], np.float64),
            alpha_ptr=_join_ptr([x.alpha_ptr for x in c]), alpha_index=_cat([x.alpha_index for x in c], np.int64),
            alpha=_cat([x.alpha for x in c], np.float32),
            beta_ptr=_join_ptr([x.beta_ptr for x in c]), beta_index=_cat([x.beta_index for x in c], np.int64),
            beta_side=_cat([x.beta_side for x in c], np.int8), beta_point=_cat([x.beta_point for x in c], np.float64),
            beta=_cat([x.beta for x in c], np.float64),
            slope_node=np.array([x[0] for x in s], dtype=np.int64),
            slope_layer=np.array([x[1] for x in s], dtype=np.int64),
            slope_rows_ptr=_ptr([x[2] for x in s]), slope_neurons=_cat([x[2] for x in s], np.int64),
            slope_values_ptr=_ptr([x[3].reshape(-1) for x in s]),
            slope_lower=_cat([x[3].reshape(-1) for x in s], np.float32),
            slope_upper=_cat([x[4].reshape(-1) for x in s], np.float32),
        )


@dataclass(frozen=True)
class Closures:
    """A batch of closures for :meth:`CertificateBuilder.close_many`: ``node, disjunct [M]`` and
    the ragged ``weights``, ``alpha_*`` and ``beta_*`` arrays with pointers ``[M + 1]`` from 0."""

    node: np.ndarray
    disjunct: np.ndarray
    weights_ptr: np.ndarray
    weights: np.ndarray
    alpha_ptr: np.ndarray
    alpha_index: np.ndarray
    alpha: np.ndarray
    beta_ptr: np.ndarray
    beta_index: np.ndarray
    beta_side: np.ndarray
    beta_point: np.ndarray
    beta: np.ndarray


def _join_ptr(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Pointers of concatenated ragged batches (each from 0) as one pointer array."""
    out, base = [np.zeros(1, np.int64)], 0
    for p in parts:
        out.append(np.asarray(p[1:], dtype=np.int64) + base)
        base += int(p[-1])
    return np.concatenate(out)


def _ptr(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([p.shape[0] for p in parts], dtype=np.int64)]).astype(np.int64)


def _cat(parts: Sequence[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

