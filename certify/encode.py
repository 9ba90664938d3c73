"""A solver-neutral constraint system for a :class:`~certify.problem.Problem`.

``encode(problem, bounds)`` walks the network *once* with one table keyed by op
(:data:`ENCODERS`) and writes:

* variables ``v[0..n)`` with bounds ``lower <= v <= upper`` (the input box, then the
  pre-computed neuron bounds, widened by :data:`BOUND_SLACK` so float rounding in the bound
  computation cannot cut off a real point);
* linear equalities ``A_eq v = b_eq`` (affine ops) and inequalities ``A_ub v <= b_ub``;
* ReLU constraints ``y = relu(x)`` for the *unstable* neurons only (``l < 0 < u``); a stable
  neuron is linear: active ones alias ``y`` to ``x``, inactive ones are a variable fixed at 0;
* max constraints ``y = max(x_1..x_m)`` (maxpool windows);
* the unsafe disjunction: conjunctions ``A y <= b`` over the output variables.

Shape-only ops (reshape, transpose, slice, concat) create no variables: a node is an array of
variable indices with the node's shape, and those ops just rearrange the array.  Sigmoid and
tanh are not encodable exactly; :func:`encodable` says so before anything runs.

Engines (LP, MILP, SMT...) consume the :class:`ConstraintSystem`; they never walk the network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from certify.bounds import Bounds
from certify.network import FORWARD, Node, Op
from certify.problem import Problem

__all__ = ["BOUND_SLACK", "ConstraintSystem", "SparseRows", "Conjunction", "MaxConstraint", "ReluConstraints",
           "ENCODABLE_OPS", "encodable", "encode"]

#: Pre-computed bounds are widened by ``BOUND_SLACK * (1 + |bound|)`` before use.
BOUND_SLACK = 1e-7


@dataclass(frozen=True, slots=True, eq=False)
class SparseRows:
    """Linear rows in coordinate form: ``M[row[j], col[j]] += val[j]``, ``M: [m, n]``, right-hand
    side ``rhs: [m]``.  (Kept free of scipy; :meth:`matrix` builds a scipy CSR matrix.)"""

    row: np.ndarray
    col: np.ndarray
    val: np.ndarray
    rhs: np.ndarray
    n: int

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.rhs.shape[0]), self.n)

    def matrix(self):  # -> scipy.sparse.csr_matrix
        import scipy.sparse as sp

        m = sp.csr_matrix((self.val, (self.row, self.col)), shape=self.shape)
        m.sum_duplicates()
        return m


@dataclass(frozen=True, slots=True, eq=False)
class ReluConstraints:
    """``v[y[i]] = relu(v[x[i]])`` with ``lower[i] < 0 < upper[i]`` bounds on ``v[x[i]]``.

    ``layer[i]`` numbers the ReLU node the neuron belongs to (0, 1, ... in network order);
    ``node[i]`` is the name of the pre-activation node and ``index[i]`` the flat position in it.
    """

    x: np.ndarray  # [R] int
    y: np.ndarray  # [R] int
    lower: np.ndarray  # [R] float64
    upper: np.ndarray  # [R] float64
    layer: np.ndarray  # [R] int
    index: np.ndarray  # [R] int, flat index within the pre-activation node
    layer_nodes: tuple[str, ...]  # pre-activation node name per layer number

    @property
    def count(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True, slots=True, eq=False)
class MaxConstraint:
    """``v[y] = max(v[xs])``."""

    y: int
    xs: tuple[int, ...]


@dataclass(frozen=True, slots=True, eq=False)
class Conjunction:
    """``A @ v[output] <= b``; ``A: [k, n_out]``."""

    A: np.ndarray
    b: np.ndarray


@dataclass(frozen=True, slots=True, eq=False)
class ConstraintSystem:
    n: int
    lower: np.ndarray  # [n] float64, finite
    upper: np.ndarray  # [n]
    eq: SparseRows  # rows of ``A_eq v = b_eq``
    ub: SparseRows  # rows of ``A_ub v <= b_ub``
    relus: ReluConstraints
    maxes: tuple[MaxConstraint, ...]
    inputs: np.ndarray  # [n_in] int, flat (row-major) input variables
    outputs: np.ndarray  # [n_out] int, flat output variables
    unsafe: tuple[Conjunction, ...]
    input_shape: tuple[int, ...]

    def stats(self) -> dict[str, int]:
        return {"variables": self.n, "equalities": self.eq.shape[0],
                "inequalities": self.ub.shape[0], "unstable_relus": self.relus.count,
                "maxes": len(self.maxes)}


#: Ops that :func:`encode` handles exactly.
ENCODABLE_OPS: frozenset[str] = frozenset(
    op.value for op in (Op.INPUT, Op.LINEAR, Op.CONV, Op.AFFINE, Op.ADD, Op.SUB, Op.RELU, Op.MAXPOOL,
                        Op.AVGPOOL, Op.RESHAPE, Op.TRANSPOSE, Op.CONCAT, Op.SLICE))


def encodable(problem: Problem) -> list[str]:
    """The ops of ``problem`` that cannot be encoded exactly (empty when all can)."""
    return sorted(op.value for op in problem.network.ops() if op.value not in ENCODABLE_OPS)


class _Builder:
    """Accumulates variables and rows while the network is walked."""

    def __init__(self) -> None:
        self.lower: list[np.ndarray] = []
        self.upper: list[np.ndarray] = []
        self.n = 0
        self.eq: list[tuple[np.ndarray, ...]] = []  # (rows, cols, vals, rhs) per block
        self.ub: list[tuple[np.ndarray, ...]] = []
        self.relu_parts: list[tuple[np.ndarray, ...]] = []
        self.layer_nodes: list[str] = []
        self.maxes: list[MaxConstraint] = []

    def new_vars(self, shape: tuple[int, ...], lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
        size = int(np.prod(shape)) if shape else 1
        idx = np.arange(self.n, self.n + size)
        self.n += size
        lo, hi = _widen(lower.reshape(-1), upper.reshape(-1))
        self.lower.append(lo)
        self.upper.append(hi)
        return idx.reshape(shape)

    def add_eq(self, out: np.ndarray, ins: list[np.ndarray], mats: list[_Coo], const: np.ndarray) -> None:
        """Rows ``v[out] - sum_k M_k v[ins_k] = const`` (``M_k: [len(out), len(ins_k)]`` as COO)."""
        rows, cols, vals = [np.arange(out.size)], [out.reshape(-1)], [np.ones(out.size)]
        for idx, (mr, mc, mv) in zip(ins, mats):
            rows.append(mr)
            cols.append(idx.reshape(-1)[mc])
            vals.append(-mv)
        self.eq.append((np.concatenate(rows), np.concatenate(cols), np.concatenate(vals),
                        np.asarray(const, dtype=np.float64).reshape(-1)))

    def rows(self, parts: list) -> SparseRows:
        r, c, v, b = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)], [np.zeros(0)]
        offset = 0
        for rows, cols, vals, rhs in parts:
            r.append(rows + offset)
            c.append(cols)
            v.append(vals)
            b.append(rhs)
            offset += rhs.size
        return SparseRows(np.concatenate(r).astype(np.int64), np.concatenate(c).astype(np.int64),
                          np.concatenate(v).astype(np.float64), np.concatenate(b).astype(np.float64), self.n)


_Coo = tuple[np.ndarray, np.ndarray, np.ndarray]


def _coo(dense: np.ndarray) -> _Coo:
    r, c = np.nonzero(dense)
    return r, c, dense[r, c]


def _diag(values: np.ndarray) -> _Coo:
    i = np.arange(values.size)
    return i, i, np.asarray(values, dtype=np.float64)


def _widen(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    return lower - BOUND_SLACK * (1 + np.abs(lower)), upper + BOUND_SLACK * (1 + np.abs(upper))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


Encoder = Callable[[_Builder, Node, list[np.ndarray], Mapping[str, Bounds]], np.ndarray]


def _node_bounds(bounds: Mapping[str, Bounds], node: Node) -> tuple[np.ndarray, np.ndarray]:
    b = bounds[node.name]
    return _np(b.lower[0]).reshape(node.shape), _np(b.upper[0]).reshape(node.shape)


def _fresh(builder: _Builder, node: Node, bounds: Mapping[str, Bounds]) -> np.ndarray:
    lo, hi = _node_bounds(bounds, node)
    return builder.new_vars(node.shape, lo, hi)


def _enc_linear(builder: _Builder, node: Node, ins: list[np.ndarray], bounds: Mapping[str, Bounds]) -> np.ndarray:
    w = _np(node.params["weight"])  # [n_in, n_out]
    bias = node.params.get("bias")
    out = _fresh(builder, node, bounds)
    x = ins[0]
    n_in, n_out = w.shape
    xs = x.reshape(-1, n_in)
    ys = out.reshape(-1, n_out)
    const = np.zeros(n_out) if bias is None else np.broadcast_to(_np(bias), (n_out,))
    wt = _coo(w.T)
    for k in range(xs.shape[0]):  # one block per leading position (usually one)
        builder.add_eq(ys[k], [xs[k]], [wt], const)
    return out


def _enc_jacobian(builder: _Builder, node: Node, ins: list[np.ndarray], bounds: Mapping[str, Bounds]) -> np.ndarray:
    """Any affine single-input op (conv, avgpool, affine): expand it to a sparse matrix by
    evaluating it on the identity batch (fine for the small nets exact engines can handle)."""
    x = ins[0]
    n_in = x.size
    dtype = torch.float64
    p = {k: v.to(dtype) for k, v in node.params.items()}
    from dataclasses import replace
    n64 = replace(node, params=p)
    with torch.no_grad():
        zero = torch.zeros(1, *x.shape, dtype=dtype)
        const = FORWARD[node.op](n64, [zero]).reshape(-1)
        eye = torch.eye(n_in, dtype=dtype).reshape(n_in, *x.shape)
        jac = (FORWARD[node.op](n64, [eye]).reshape(n_in, -1) - const).T  # [n_out, n_in]
    out = _fresh(builder, node, bounds)
    builder.add_eq(out, [x], [_coo(jac.numpy())], const.numpy())
    return out


def _enc_affine(builder: _Builder, node: Node, ins: list[np.ndarray], bounds: Mapping[str, Bounds]) -> np.ndarray:
    x = ins[0]
    scale = np.broadcast_to(_np(node.params["scale"]), node.shape).reshape(-1)
    shift = np.broadcast_to(_np(node.params["shift"]), node.shape).reshape(-1)
    out = _fresh(builder, node, bounds)
    builder.add_eq(out, [x], [_diag(scale)], shift)
    return out


def _enc_addsub(sign: float) -> Encoder:
    def rule(builder: _Builder, node: Node, ins: list[np.ndarray], bounds: Mapping[str, Bounds]) -> np.ndarray:
        out = _fresh(builder, node, bounds)
        eye = _diag(np.ones(out.size))
        neg = _diag(np.full(out.size, sign))
        builder.add_eq(out, [ins[0], ins[1]], [eye, neg], np.zeros(out.size))
        return out
    return rule


def _enc_relu(builder: _Builder, node: Node, ins: list[np.ndarray], bounds: Mapping[str, Bounds]) -> np.ndarray:
    x = ins[0].reshape(-1)
    pre = bounds[node.inputs[0]]
    l, u = _widen(_np(pre.lower[0]).reshape(-1), _np(pre.upper[0]).reshape(-1))
    out = np.empty(x.size, dtype=np.int64)
    active = l >= 0
    inactive = u <= 0
    unstable = ~(active | inactive)
    out[active] = x[active]
    n_inactive = int(inactive.sum())
    if n_inactive:
        out[inactive] = builder.new_vars((n_inactive,), np.zeros(n_inactive), np.zeros(n_inactive))
    k = int(unstable.sum())
    if k:
        y_lo = np.zeros(k)
        y_hi = u[unstable]
        post = bounds.get(node.name)
        if post is not None:
            y_hi = np.minimum(y_hi, _widen(y_lo, _np(post.upper[0]).reshape(-1)[unstable])[1])
        ys = builder.new_vars((k,), y_lo, y_hi)
        out[unstable] = ys
        layer = len(builder.layer_nodes)
        builder.layer_nodes.append(node.inputs[0])
        builder.relu_parts.append((x[unstable], ys, l[unstable], u[unstable], np.full(k, layer),
                                   np.nonzero(unstable)[0]))
    # Bounds on the pre-activation variables were widened once already; keep the widened l, u.
    return out.reshape(node.shape)


def _enc_maxpool(builder: _Builder, node: Node, ins: list[np.ndarray], bounds: Mapping[str, Bounds]) -> np.ndarray:
    at = node.attrs
    x = ins[0]  # [C, H, W]
    c, h, w = x.shape
    top, left, bottom, right = at["padding"]
    padded = np.full((c, h + top + bottom, w + left + right), -1, dtype=np.int64)
    padded[:, top:top + h, left:left + w] = x
    kh, kw = (at["kernel"], at["kernel"]) if isinstance(at["kernel"], int) else at["kernel"]
    sh, sw = (at["stride"], at["stride"]) if isinstance(at["stride"], int) else at["stride"]
    out = _fresh(builder, node, bounds)
    _, ho, wo = node.shape
    for ch in range(c):
        for i in range(ho):
            for j in range(wo):
                win = padded[ch, i * sh:i * sh + kh, j * sw:j * sw + kw].reshape(-1)
                xs = tuple(int(v) for v in win if v >= 0)
                builder.maxes.append(MaxConstraint(int(out[ch, i, j]), xs))
    return out


def _enc_reshape(builder: _Builder, node: Node, ins: list[np.ndarray], bounds: Mapping[str, Bounds]) -> np.ndarray:
    return ins[0].reshape(node.shape)


def _enc_transpose(builder: _Builder, node: Node, ins: list[np.ndarray], bounds: Mapping[str, Bounds]) -> np.ndarray:
    return np.transpose(ins[0], node.attrs["perm"])


def _enc_concat(builder: _Builder, node: Node, ins: list[np.ndarray], bounds: Mapping[str, Bounds]) -> np.ndarray:
    return np.concatenate(ins, axis=node.attrs["axis"])


def _enc_slice(builder: _Builder, node: Node, ins: list[np.ndarray], bounds: Mapping[str, Bounds]) -> np.ndarray:
    a = node.attrs
    index = [slice(None)] * ins[0].ndim
    index[a["axis"]] = slice(a["start"], a["stop"])
    return ins[0][tuple(index)]


#: One encoding rule per op: ``rule(builder, node, input variable arrays, bounds) -> output vars``.
ENCODERS: dict[Op, Encoder] = {
    Op.LINEAR: _enc_linear,
    Op.CONV: _enc_jacobian,
    Op.AVGPOOL: _enc_jacobian,
    Op.AFFINE: _enc_affine,
    Op.ADD: _enc_addsub(1.0),
    Op.SUB: _enc_addsub(-1.0),
    Op.RELU: _enc_relu,
    Op.MAXPOOL: _enc_maxpool,
    Op.RESHAPE: _enc_reshape,
    Op.TRANSPOSE: _enc_transpose,
    Op.CONCAT: _enc_concat,
    Op.SLICE: _enc_slice,
}


def encode(problem: Problem, bounds: Mapping[str, Bounds]) -> ConstraintSystem:
    """The constraint system of ``problem``; ``bounds[name]`` (batch of 1) bound every node
    (e.g. :func:`certify.bounds.crown_bounds` over ``problem.box``).

    Raises ``ValueError`` for an op with no encoding (check :func:`encodable` first).
    """
    missing = encodable(problem)
    if missing:
        raise ValueError(f"ops {missing} have no exact encoding")
    net = problem.network
    b = _Builder()
    box_lo = np.asarray(problem.box.lower, dtype=np.float64)
    box_hi = np.asarray(problem.box.upper, dtype=np.float64)
    inputs = b.new_vars(net.input_shape, box_lo, box_hi)
    # The input box is exact: undo the widening for the input variables.
    b.lower[0], b.upper[0] = box_lo.reshape(-1).copy(), box_hi.reshape(-1).copy()
    values: dict[str, np.ndarray] = {net.input.name: inputs}
    for node in net.nodes[1:]:
        values[node.name] = ENCODERS[node.op](b, node, [values[i] for i in node.inputs], bounds)
    outputs = values[net.output].reshape(-1)
    eq = b.rows(b.eq)
    ub = b.rows(b.ub)
    if b.relu_parts:
        parts = [np.concatenate(p) for p in zip(*b.relu_parts)]
        relus = ReluConstraints(parts[0].astype(np.int64), parts[1].astype(np.int64), parts[2], parts[3],
                                parts[4].astype(np.int64), parts[5].astype(np.int64), tuple(b.layer_nodes))
    else:
        e = np.zeros(0, dtype=np.int64)
        relus = ReluConstraints(e, e, np.zeros(0), np.zeros(0), e, e, ())
    unsafe = tuple(Conjunction(np.asarray(hs.A, dtype=np.float64), np.asarray(hs.b, dtype=np.float64))
                   for hs in problem.unsafe)
    lower = np.concatenate(b.lower)
    upper = np.concatenate(b.upper)
    return ConstraintSystem(b.n, lower, upper, eq, ub, relus, tuple(b.maxes),
                            inputs.reshape(-1), outputs, unsafe, tuple(net.input_shape))
