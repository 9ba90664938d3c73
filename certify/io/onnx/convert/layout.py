"""Converters of shapes, selections and reductions: Flatten, Reshape, (Un)Squeeze, Transpose,
Concat, Slice, Gather, Split, ReduceSum/Mean, Expand, Softmax, Shape."""

from __future__ import annotations

import math

import numpy as np

from certify.errors import ModelError
from certify.io.onnx.convert.common import Converter, out_shape, shape_of
from certify.io.onnx.graph import Graph, OnnxNode, Ref, Value
from certify.network import Op


def _flatten(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    full = g.full_shape(x)
    axis = int(n.attrs.get("axis", 1))
    if not -len(full) <= axis <= len(full):
        raise ModelError(f"{g.name}: node {n.name!r} (Flatten): axis {axis} out of range")
    axis += len(full) if axis < 0 else 0
    return [g.reshape(n, x, (math.prod(full[:axis]), math.prod(full[axis:])))]


def _reshape(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    target = g.const(n, 1, "shape")
    if target is None:
        raise ModelError(f"{g.name}: node {n.name!r} (Reshape) has no shape")
    full = g.full_shape(x)
    dims = [int(d) for d in target.reshape(-1)]
    if not n.attrs.get("allowzero", 0):
        dims = [full[i] if d == 0 and i < len(full) else d for i, d in enumerate(dims)]
    if dims.count(-1) > 1:
        raise ModelError(f"{g.name}: node {n.name!r} (Reshape) has several -1 dims")
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if known == 0 or math.prod(full) % known:
            raise ModelError(f"{g.name}: node {n.name!r} (Reshape) cannot reshape {full} to {dims}")
        dims[dims.index(-1)] = math.prod(full) // known
    return [g.reshape(n, x, dims)]


def _axes(g: Graph, n: OnnxNode) -> list[int] | None:
    """``axes`` of Squeeze / Unsqueeze / reductions: an attribute in old opsets, an input since."""
    if "axes" in n.attrs:
        return [int(a) for a in n.attrs["axes"]]
    axes = g.const(n, 1, "axes") if len(n.inputs) > 1 else None
    return None if axes is None else [int(a) for a in axes.reshape(-1)]


def _squeeze(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    full = g.full_shape(x)
    axes = _axes(g, n)
    drop = {i for i, d in enumerate(full) if d == 1} if axes is None else {a % len(full) for a in axes}
    if any(full[a] != 1 for a in drop):
        raise ModelError(f"{g.name}: node {n.name!r} (Squeeze) squeezes an axis of size > 1")
    return [g.reshape(n, x, [d for i, d in enumerate(full) if i not in drop])]


def _unsqueeze(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    full = list(g.full_shape(x))
    axes = _axes(g, n)
    if not axes:
        raise ModelError(f"{g.name}: node {n.name!r} (Unsqueeze) has no axes")
    rank = len(full) + len(axes)
    for a in sorted(a % rank for a in axes):
        full.insert(a, 1)
    return [g.reshape(n, x, full)]


def _transpose(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    full = g.full_shape(x)
    rank = len(full)
    perm = [int(p) for p in n.attrs.get("perm", range(rank - 1, -1, -1))]
    if sorted(perm) != list(range(rank)):
        raise ModelError(f"{g.name}: node {n.name!r} (Transpose): perm {perm} for rank {rank}")
    out = tuple(full[p] for p in perm)
    moved = [p for p in perm if full[p] != 1]
    if moved == sorted(moved):  # only axes of size 1 move: the data keeps its order
        return [g.reshape(n, x, out)]
    if g.batched and x.batched and perm[0] == 0:
        return [g.emit(n, n.out, Op.TRANSPOSE, [x], attrs={"perm": tuple(p - 1 for p in perm[1:])})]
    y = g.unbatched(n, x) if g.batched and x.batched else x
    t = g.emit(n, g.fresh(n.out), Op.TRANSPOSE, [y], attrs={"perm": tuple(perm)}, batched=False)
    return [g.reshape(n, t, out)]


def _concat(g: Graph, n: OnnxNode) -> list[Value]:
    values = [g.value(n, i) for i in range(len(n.inputs)) if n.inputs[i]]
    if not any(isinstance(v, Ref) for v in values):
        raise n.unsupported("missing operand")
    shapes = [shape_of(g, v) for v in values]
    rank = len(shapes[0])
    axis = int(n.attrs["axis"])
    if not -rank <= axis < rank:
        raise ModelError(f"{g.name}: node {n.name!r} (Concat): axis {axis} out of range")
    axis %= rank
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    batched = g.canonical(out)
    refs = []
    for v, shape in zip(values, shapes):
        if shape[axis] == 0:
            continue
        r = v if isinstance(v, Ref) else g.constant(n, v)
        r = g.reshape(n, r, shape, last=False) if batched else g.unbatched(n, r)
        refs.append(r)
    if len(refs) == 1:
        return [refs[0]]
    return [g.emit(n, n.out, Op.CONCAT, refs, attrs={"axis": axis - 1 if batched else axis}, batched=batched)]


def _gather_axis(g: Graph, n: OnnxNode, x: Ref, axis: int, indices: np.ndarray, last: bool) -> Ref:
    """``x`` taken at ``indices`` (any shape, constant) along the ONNX ``axis``."""
    full = g.full_shape(x)
    dim = full[axis]
    flat = [int(i) + dim if i < 0 else int(i) for i in np.reshape(indices, -1)]
    if any(not 0 <= i < dim for i in flat):
        raise ModelError(f"{g.name}: node {n.name!r} ({n.op_type}): index out of range for size {dim}")
    out = full[:axis] + tuple(np.shape(indices)) + full[axis + 1:]
    if g.batched and x.batched and axis == 0:  # every index is 0: a reshape
        return g.reshape(n, x, out, last)
    if flat == list(range(dim)) and len(np.shape(indices)) == 1:
        return x
    paxis = g.axis(n, axis, x)
    if flat == list(range(flat[0], flat[0] + len(flat))):  # a contiguous range: a slice
        picked = g.emit(n, g.fresh(n.out), Op.SLICE, [x],
                        attrs={"axis": paxis, "start": flat[0], "stop": flat[0] + len(flat)})
    else:
        picked = g.emit(n, g.fresh(n.out), Op.GATHER, [x], attrs={"axis": paxis, "indices": tuple(flat)})
    return g.reshape(n, picked, out, last)


def _gather(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.value(n, 0)
    idx = g.value(n, 1)
    if not isinstance(idx, np.ndarray):
        raise n.unsupported("indices computed from the input (data-dependent indexing)")
    if not isinstance(x, Ref):
        raise n.unsupported("missing operand")
    axis = int(n.attrs.get("axis", 0)) % len(g.full_shape(x))
    return [_gather_axis(g, n, x, axis, idx, True)]


def _slice(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    full = g.full_shape(x)
    if g.opset < 10:
        starts, ends = n.attrs["starts"], n.attrs["ends"]
        axes, steps = n.attrs.get("axes"), None
    else:
        for i, what in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")):
            if isinstance(g.value(n, i), Ref):
                raise n.unsupported(f"{what} computed from the input (data-dependent indexing)")
        starts, ends, axes, steps = (g.const(n, i, w) for i, w in enumerate(("starts", "ends", "axes", "steps"), 1))
        if starts is None or ends is None:
            raise ModelError(f"{g.name}: node {n.name!r} (Slice) lacks starts or ends")
    starts = [int(s) for s in np.reshape(starts, -1)]
    ends = [int(e) for e in np.reshape(ends, -1)]
    axes = list(range(len(starts))) if axes is None else [int(a) % len(full) for a in np.reshape(axes, -1)]
    steps = [1] * len(starts) if steps is None else [int(s) for s in np.reshape(steps, -1)]
    cuts = []
    for a, start, end, step in zip(axes, starts, ends, steps):
        if step == 0:
            raise ModelError(f"{g.name}: node {n.name!r} (Slice): step 0")
        picked = list(range(full[a]))[slice(start, end, step)]
        if not picked:
            raise n.unsupported(f"empty slice of axis {a}")
        if picked != list(range(full[a])):
            cuts.append((a, picked))
    for k, (a, picked) in enumerate(cuts):
        x = _gather_axis(g, n, x, a, np.array(picked), k == len(cuts) - 1)
    return [x]


def _split(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    full = g.full_shape(x)
    axis = int(n.attrs.get("axis", 0)) % len(full)
    sizes = n.attrs.get("split")
    if sizes is None and len(n.inputs) > 1 and n.inputs[1]:
        sizes = g.const(n, 1, "split")
    count = len(n.outputs)
    if sizes is None:
        if full[axis] % count and "num_outputs" not in n.attrs:
            raise ModelError(f"{g.name}: node {n.name!r} (Split): {full[axis]} not divisible by {count}")
        size = -(-full[axis] // count)
        sizes = [min(size, full[axis] - k * size) for k in range(count)]
    sizes = [int(s) for s in np.reshape(sizes, -1)]
    if sum(sizes) != full[axis] or len(sizes) != count:
        raise ModelError(f"{g.name}: node {n.name!r} (Split): sizes {sizes} for axis of size {full[axis]}")
    outs: list[Value] = []
    start = 0
    for k, size in enumerate(sizes):
        index = np.arange(start, start + size)
        sub = OnnxNode(n.op_type, n.name, n.inputs, (n.outputs[k],), n.attrs, n.proto)
        outs.append(_gather_axis(g, sub, x, axis, index, True) if size != full[axis] else x)
        start += size
    return outs


def _reduce(mean: bool) -> Converter:
    def convert(g: Graph, n: OnnxNode) -> list[Value]:
        x = g.ref(n, 0)
        full = g.full_shape(x)
        raw = n.attrs.get("axes")
        if raw is None and len(n.inputs) > 1 and n.inputs[1]:
            raw = g.const(n, 1, "axes")
        if raw is None or np.size(raw) == 0:
            if n.attrs.get("noop_with_empty_axes", 0):
                return [x]
            raw = list(range(len(full)))
        axes = sorted({int(a) % len(full) for a in np.reshape(np.asarray(raw), -1)})
        keep = bool(n.attrs.get("keepdims", 1))
        out = tuple(1 if a in axes else d for a, d in enumerate(full)) if keep else tuple(
            d for a, d in enumerate(full) if a not in axes)
        offset = 1 if g.batched and x.batched else 0
        per_sample = tuple(a - offset for a in axes if a >= offset)
        y = x
        if per_sample:
            y = g.emit(n, g.fresh(n.out), Op.REDUCE_SUM, [x], attrs={"axes": per_sample, "keepdims": True})
        if mean:
            count = math.prod(full[a] for a in axes)
            y = g.affine(n, y, 1.0 / count, 0.0, last=False)
        return [g.reshape(n, y, out)]

    return convert


def _expand(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    shape = g.const(n, 1, "shape")
    if shape is None:
        raise ModelError(f"{g.name}: node {n.name!r} (Expand) has no shape")
    full = out_shape(g, n, g.full_shape(x), [int(d) for d in np.reshape(shape, -1)])
    return [g.broadcast(n, x, full)]


def _softmax(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    full = g.full_shape(x)
    axis = int(n.attrs.get("axis", -1 if g.opset >= 13 else 1)) % len(full)
    if g.opset < 13 and axis != len(full) - 1:  # the old "coerced to 2-D" meaning
        flat = g.reshape(n, x, full[:axis] + (math.prod(full[axis:]),), last=False)
        s = g.emit(n, g.fresh(n.out), Op.SOFTMAX, [flat], attrs={"axis": g.axis(n, axis, flat)})
        return [g.reshape(n, s, full)]
    return [g.emit(n, n.out, Op.SOFTMAX, [x], attrs={"axis": g.axis(n, axis, x)})]


def _shape(g: Graph, n: OnnxNode) -> list[Value]:
    full = np.array(g.full_shape(g.ref(n, 0)), dtype=np.int64)
    start, end = n.attrs.get("start", 0), n.attrs.get("end")
    return [full[start:end]]


def _size(g: Graph, n: OnnxNode) -> list[Value]:
    return [np.array(math.prod(g.full_shape(g.ref(n, 0))), dtype=np.int64)]


def _constant_of_shape(g: Graph, n: OnnxNode) -> list[Value]:
    raise n.unsupported("shape computed from the input")


CONVERTERS: dict[str, Converter] = {
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": _transpose,
    "Concat": _concat,
    "Slice": _slice,
    "Gather": _gather,
    "Split": _split,
    "ReduceSum": _reduce(mean=False),
    "ReduceMean": _reduce(mean=True),
    "Expand": _expand,
    "Softmax": _softmax,
    "Shape": _shape,
    "Size": _size,
    "ConstantOfShape": _constant_of_shape,
}
