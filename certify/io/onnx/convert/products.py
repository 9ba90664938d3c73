"""Converters of products and images: MatMul, Gemm, Conv, ConvTranspose, BatchNormalization,
pooling, Resize/Upsample, Pad."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from certify.errors import ModelError
from certify.io.onnx.convert.common import Converter, operands, out_shape
from certify.io.onnx.graph import Graph, OnnxNode, Ref, Value
from certify.network import Op


def _matrix(n: OnnxNode, w: np.ndarray, max_rank: int) -> np.ndarray:
    """A constant MatMul operand as a 2-D matrix (leading axes of size 1 dropped)."""
    if w.ndim > 2 and (w.ndim > max_rank or any(d != 1 for d in w.shape[:-2])):
        raise n.unsupported(f"batched matrix product with a constant of shape {w.shape}")
    return w.reshape(w.shape[-2:]).astype(np.float64) if w.ndim >= 2 else w.astype(np.float64)


def _matmul(g: Graph, n: OnnxNode) -> list[Value]:
    a, b = operands(g, n)
    if isinstance(a, Ref) and isinstance(b, Ref):
        return [_matmul_values(g, n, a, b)]
    if isinstance(a, Ref) and isinstance(b, np.ndarray):  # x @ W: linear over the last axis
        w = _matrix(n, b, len(g.full_shape(a)))
        if not a.shape:
            raise n.unsupported("matrix product of a scalar")
        if w.ndim == 1:  # x @ w reduces the last axis
            lin = g.emit(n, g.fresh(n.out), Op.LINEAR, [a], {"weight": w[:, None]})
            return [g.reshape(n, lin, g.full_shape(lin)[:-1])]
        return [g.emit(n, n.out, Op.LINEAR, [a], {"weight": w})]
    if isinstance(a, np.ndarray) and isinstance(b, Ref):  # W @ x
        w = _matrix(n, a, len(g.full_shape(b)))
        if w.ndim != 2:
            raise n.unsupported(f"left constant operand of shape {a.shape}")
        if len(g.full_shape(b)) == 1:  # W @ x for a 1-D x
            return [g.emit(n, n.out, Op.LINEAR, [b], {"weight": w.T})]
        if len(b.shape) < 2:  # a batched row: the size-1 batch axis is the rows' axis
            b = g.unbatched(n, b)
        # W @ x over the last two axes: transpose, linear, transpose back.
        perm = (*range(len(b.shape) - 2), len(b.shape) - 1, len(b.shape) - 2)
        t = g.emit(n, g.fresh(n.out), Op.TRANSPOSE, [b], attrs={"perm": perm})
        lin = g.emit(n, g.fresh(n.out), Op.LINEAR, [t], {"weight": w.T})
        return [g.emit(n, n.out, Op.TRANSPOSE, [lin], attrs={"perm": perm})]
    raise n.unsupported("missing operand")


def _matmul_values(g: Graph, n: OnnxNode, a: Ref, b: Ref) -> Ref:
    """``a @ b`` of two values (the bilinear ``matmul``), leading axes broadcast."""
    fa, fb = g.full_shape(a), g.full_shape(b)
    if len(fa) < 2 or len(fb) < 2:
        raise n.unsupported("matrix product of two values where one is 1-D")
    if fa[-1] != fb[-2]:
        raise ModelError(f"{g.name}: node {n.name!r} (MatMul): shapes {fa} and {fb} do not multiply")
    lead = out_shape(g, n, fa[:-2], fb[:-2])
    x = g.broadcast(n, a, lead + fa[-2:])
    y = g.broadcast(n, b, lead + fb[-2:])
    if not (x.batched and y.batched and len(x.shape) >= 2):
        x, y = g.unbatched(n, x), g.unbatched(n, y)
    return g.emit(n, n.out, Op.MATMUL, [x, y])


def _gemm(g: Graph, n: OnnxNode) -> list[Value]:
    if n.attrs.get("transA", 0):
        raise n.unsupported("transA=1")
    x = g.ref(n, 0)
    b = g.const(n, 1, "B")
    c = g.const(n, 2, "C")
    if len(g.full_shape(x)) != 2 or b is None or b.ndim != 2:
        raise ModelError(f"{g.name}: node {n.name!r} (Gemm) needs 2-D operands")
    w = (b.T if n.attrs.get("transB", 0) else b).astype(np.float64) * n.attrs.get("alpha", 1.0)
    if c is None:
        return [g.emit(n, n.out, Op.LINEAR, [x], {"weight": w})]
    lin = g.emit(n, g.fresh(n.out), Op.LINEAR, [x], {"weight": w})
    return [g.affine(n, g.broadcast(n, lin, out_shape(g, n, g.full_shape(lin), c.shape)), 1.0,
                     c.astype(np.float64) * n.attrs.get("beta", 1.0))]


# ---------------------------------------------------------------------------------------
# Convolutions and pooling
# ---------------------------------------------------------------------------------------

def _image(g: Graph, n: OnnxNode, x: Ref) -> Ref:
    """``x`` as a batched ``[N, C, H, W]`` value (per-sample ``(C, H, W)``)."""
    full = g.full_shape(x)
    if not g.batched or len(full) != 4 or full[0] != 1:
        raise n.unsupported(f"2-D window ops need an input of shape [N, C, H, W], got {list(full)}")
    return g.reshape(n, x, full, last=False)


def _window(g: Graph, n: OnnxNode, x: Ref, kernel: Sequence[int]) -> dict[str, Any]:
    """stride, padding (t, l, b, r) and dilation of a 2-D conv / pool node."""
    if len(kernel) != 2:
        raise n.unsupported(f"only 2-D kernels are supported, got kernel shape {list(kernel)}")
    stride = tuple(int(s) for s in n.attrs.get("strides", (1, 1)))
    dilation = tuple(int(d) for d in n.attrs.get("dilations", (1, 1)))
    auto_pad = n.attrs.get("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = tuple(int(p) for p in n.attrs.get("pads", (0, 0, 0, 0)))
    elif auto_pad == "VALID":
        pads = (0, 0, 0, 0)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(x.shape[1:], kernel, stride, dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = (*begin, *end)
    else:
        raise n.unsupported(f"auto_pad={auto_pad}")
    return {"stride": stride, "padding": pads, "dilation": dilation}


def _conv(g: Graph, n: OnnxNode) -> list[Value]:
    w = g.const(n, 1, "weight")
    bias = g.const(n, 2, "bias")
    if w is None or w.ndim != 4:
        raise n.unsupported(f"only 2-D convolution is supported (weight shape {None if w is None else w.shape})")
    x = _image(g, n, g.ref(n, 0))
    attrs = _window(g, n, x, w.shape[2:])
    attrs["groups"] = int(n.attrs.get("group", 1))
    params = {"weight": w} if bias is None else {"weight": w, "bias": bias}
    return [g.emit(n, n.out, Op.CONV, [x], params, attrs)]


def _conv_transpose(g: Graph, n: OnnxNode) -> list[Value]:
    w = g.const(n, 1, "weight")
    bias = g.const(n, 2, "bias")
    if w is None or w.ndim != 4:
        raise n.unsupported(f"only 2-D transposed convolution is supported (weight shape "
                            f"{None if w is None else w.shape})")
    if "output_shape" in n.attrs or n.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise n.unsupported("output_shape / auto_pad SAME (give pads instead)")
    x = _image(g, n, g.ref(n, 0))
    stride = tuple(int(s) for s in n.attrs.get("strides", (1, 1)))
    dilation = tuple(int(d) for d in n.attrs.get("dilations", (1, 1)))
    out_pad = tuple(int(p) for p in n.attrs.get("output_padding", (0, 0)))
    pads = tuple(int(p) for p in n.attrs.get("pads", (0, 0, 0, 0)))
    if any(o >= max(s, d) for o, s, d in zip(out_pad, stride, dilation)):
        raise n.unsupported(f"output_padding {list(out_pad)} not below stride or dilation")
    attrs = {"stride": stride, "dilation": dilation, "output_padding": out_pad, "padding": pads,
             "groups": int(n.attrs.get("group", 1))}
    params = {"weight": w} if bias is None else {"weight": w, "bias": bias}
    return [g.emit(n, n.out, Op.CONV_TRANSPOSE, [x], params, attrs)]


def _batchnorm(g: Graph, n: OnnxNode) -> list[Value]:
    if n.attrs.get("training_mode", 0) or n.attrs.get("spatial", 1) != 1:
        raise n.unsupported("training mode or spatial=0")
    x = g.ref(n, 0)
    scale, bias, mean, var = (g.const(n, i, w) for i, w in enumerate(("scale", "B", "mean", "var"), 1))
    if scale is None or bias is None or mean is None or var is None:
        raise ModelError(f"{g.name}: node {n.name!r} (BatchNormalization) lacks an input")
    s = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + n.attrs.get("epsilon", 1e-5))
    t = bias.astype(np.float64) - mean.astype(np.float64) * s
    full = g.full_shape(x)
    if len(full) < 2:
        raise n.unsupported("input without a channel axis")
    channel = (len(full) - 2) * (1,)  # channel axis is ONNX axis 1
    return [g.affine(n, x, s.reshape(-1, *channel), t.reshape(-1, *channel))]


def _pool(op: Op) -> Converter:
    def convert(g: Graph, n: OnnxNode) -> list[Value]:
        x = _image(g, n, g.ref(n, 0))
        kernel = tuple(int(k) for k in n.attrs.get("kernel_shape", ()))
        attrs = _window(g, n, x, kernel)
        if any(d != 1 for d in attrs.pop("dilation")):
            raise n.unsupported("dilated pooling")
        if n.attrs.get("ceil_mode", 0):
            pads = attrs["padding"]
            for size, k, s, lo, hi in zip(x.shape[1:], kernel, attrs["stride"], pads[:2], pads[2:]):
                if (size + lo + hi - k) % s:
                    raise n.unsupported("ceil_mode=1 where it changes the output size")
        attrs["kernel"] = kernel
        if op is Op.AVGPOOL:
            attrs["count_include_pad"] = bool(n.attrs.get("count_include_pad", 0))
        return [g.emit(n, n.out, op, [x], attrs=attrs)]

    return convert


def _global_pool(op: Op) -> Converter:
    def convert(g: Graph, n: OnnxNode) -> list[Value]:
        x = _image(g, n, g.ref(n, 0))
        attrs: dict[str, Any] = {"kernel": x.shape[1:], "stride": x.shape[1:], "padding": (0, 0, 0, 0)}
        if op is Op.AVGPOOL:
            attrs["count_include_pad"] = True
        return [g.emit(n, n.out, op, [x], attrs=attrs)]

    return convert


def _upsample_scales(g: Graph, n: OnnxNode, x: Ref) -> tuple[int, ...]:
    """Integer scale factors per ONNX axis of a nearest-mode Resize / Upsample."""
    full = g.full_shape(x)
    if n.op_type == "Upsample":
        scales = n.attrs.get("scales") if g.opset < 9 else g.const(n, 1, "scales")
        sizes = None
    else:
        scales = g.const(n, 1, "scales") if g.opset == 10 else g.const(n, 2, "scales")
        sizes = None if g.opset == 10 else g.const(n, 3, "sizes")
    if sizes is not None and np.size(sizes):
        factors = [int(s) / d for s, d in zip(np.reshape(sizes, -1), full)]
    elif scales is not None and np.size(scales):
        factors = [float(s) for s in np.reshape(scales, -1)]
    else:
        raise n.unsupported("neither scales nor sizes given")
    if len(factors) != len(full) or any(f < 1 or f != round(f) for f in factors):
        raise n.unsupported(f"scale factors {factors} (only integer upscaling is supported)")
    return tuple(int(f) for f in factors)


def _resize(g: Graph, n: OnnxNode) -> list[Value]:
    """Nearest-neighbour upscaling by integer factors, where it repeats every element."""
    x = g.ref(n, 0)
    mode = n.attrs.get("mode", "nearest")
    if mode != "nearest":
        raise n.unsupported(f"mode {mode!r} (only nearest)")
    if n.op_type == "Resize" and g.opset >= 11:
        transform = n.attrs.get("coordinate_transformation_mode", "half_pixel")
        rounding = n.attrs.get("nearest_mode", "round_prefer_floor")
        repeats = (transform == "asymmetric" and rounding == "floor") or (
            transform in ("half_pixel", "pytorch_half_pixel") and rounding in ("round_prefer_floor",
                                                                               "round_prefer_ceil"))
        if not repeats:
            raise n.unsupported(f"coordinate_transformation_mode {transform!r} with nearest_mode {rounding!r}")
    factors = _upsample_scales(g, n, x)
    if g.batched and x.batched:
        if factors[0] != 1:
            raise n.unsupported("it scales the batch axis")
        factors = factors[1:]
    if all(f == 1 for f in factors):
        return [x]
    return [g.emit(n, n.out, Op.UPSAMPLE, [x], attrs={"scales": factors})]


def _pad(g: Graph, n: OnnxNode) -> list[Value]:
    x = g.ref(n, 0)
    mode = n.attrs.get("mode", "constant")
    if mode != "constant":
        raise n.unsupported(f"mode {mode!r} (only constant)")
    full = g.full_shape(x)
    if g.opset < 11:
        pads, value = n.attrs.get("pads"), float(n.attrs.get("value", 0.0))
        axes = None
    else:
        pads = g.const(n, 1, "pads")
        c = g.const(n, 2, "constant_value")
        value = 0.0 if c is None or np.size(c) == 0 else float(np.reshape(c, -1)[0])
        a = g.const(n, 3, "axes")
        axes = None if a is None else [int(v) % len(full) for v in np.reshape(a, -1)]
    if pads is None:
        raise ModelError(f"{g.name}: node {n.name!r} (Pad) has no pads")
    pads = [int(p) for p in np.reshape(pads, -1)]
    axes = list(range(len(full))) if axes is None else axes
    if len(pads) != 2 * len(axes):
        raise ModelError(f"{g.name}: node {n.name!r} (Pad): {len(pads)} pads for {len(axes)} axes")
    per_axis = {a: (pads[k], pads[k + len(axes)]) for k, a in enumerate(axes)}
    if any(p < 0 for pair in per_axis.values() for p in pair):
        raise n.unsupported("negative pads (cropping)")
    offset = 1 if g.batched and x.batched else 0
    if offset and per_axis.get(0, (0, 0)) != (0, 0):
        raise n.unsupported("it pads the batch axis")
    spec = tuple(per_axis.get(a + offset, (0, 0)) for a in range(len(x.shape)))
    if all(p == (0, 0) for p in spec):
        return [x]
    return [g.emit(n, n.out, Op.PAD, [x], attrs={"pads": spec, "value": value})]


CONVERTERS: dict[str, Converter] = {
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "BatchNormalization": _batchnorm,
    "MaxPool": _pool(Op.MAXPOOL),
    "AveragePool": _pool(Op.AVGPOOL),
    "GlobalMaxPool": _global_pool(Op.MAXPOOL),
    "GlobalAveragePool": _global_pool(Op.AVGPOOL),
    "Resize": _resize,
    "Upsample": _resize,
    "Pad": _pad,
}
