"""An ONNX model read as a chain of layers on flat vectors: dense ``y = W x + b``, elementwise
``y = s x + b`` and ReLU, each reading the one before.

Weights are float64 copies of the stored values (exact).  Where the model's semantics involve
a rounded operation on constants (a division by a constant, BatchNormalization's
``gamma / sqrt(var + eps)``, Gemm's ``beta C``) the layer holds an interval around the exact
real value instead: ``scale_lo <= s <= scale_hi``, ``bias_lo <= b <= bias_hi``.  Shape-only ops
(Flatten, Reshape, Squeeze, Unsqueeze, Identity, Dropout) keep the C-order flat vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import onnx
from onnx import numpy_helper

from certify.proof.check.rounding import down, imul, midrad, mm, nonneg_mm_up, up


class ChainError(ValueError):
    """A model the checker cannot read as a chain."""


@dataclass(frozen=True, eq=False)
class Dense:
    weight: np.ndarray  # [m, n]
    bias_lo: np.ndarray  # [m]
    bias_hi: np.ndarray

    @cached_property
    def abs_t(self) -> np.ndarray:
        """``|W|`` transposed ``[n, m]``."""
        return np.ascontiguousarray(np.abs(self.weight).T)


@dataclass(frozen=True, eq=False)
class Scale:
    scale_lo: np.ndarray  # [n]
    scale_hi: np.ndarray
    bias_lo: np.ndarray
    bias_hi: np.ndarray


@dataclass(frozen=True)
class Relu:
    size: int


Layer = Dense | Scale | Relu


@dataclass(frozen=True, eq=False)
class Chain:
    layers: tuple[Layer, ...]
    sizes: tuple[int, ...]  # value t (the input of layer t; the last is the output) has sizes[t]

    @property
    def relu_at(self) -> tuple[int, ...]:
        """The layer index of each ReLU, in order (its pre-activation is value ``relu_at[k]``)."""
        return tuple(i for i, layer in enumerate(self.layers) if isinstance(layer, Relu))

    @property
    def relu_sizes(self) -> tuple[int, ...]:
        return tuple(self.sizes[i] for i in self.relu_at)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The float64 forward pass of ``x [B, n_in]`` (not rigorous: for tests)."""
        for layer in self.layers:
            if isinstance(layer, Dense):
                x = x @ layer.weight.T + 0.5 * (layer.bias_lo + layer.bias_hi)
            elif isinstance(layer, Scale):
                x = x * 0.5 * (layer.scale_lo + layer.scale_hi) + 0.5 * (layer.bias_lo + layer.bias_hi)
            else:
                x = np.maximum(x, 0.0)
        return x


def parse_chain(model: bytes) -> Chain:
    """The chain of ``model`` (ONNX bytes); :class:`ChainError` if it is not one the checker reads."""
    try:
        graph = onnx.load_from_string(model).graph
        consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    except Exception as e:  # noqa: BLE001 (protobuf raises several types on garbage)
        raise ChainError(f"the model is not a readable ONNX file ({type(e).__name__}: {e})") from None
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ChainError(f"the model has {len(inputs)} inputs and {len(graph.output)} outputs; the checker reads one")
    shape = tuple(d.dim_value if d.dim_value > 0 else 1 for d in inputs[0].type.tensor_type.shape.dim)
    current, layers, sizes = inputs[0].name, [], [math.prod(shape)]
    for node in graph.node:
        where = f"op {node.op_type} at node {node.name!r}"
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Constant":
            consts[node.output[0]] = _constant(attrs, where)
            continue
        reads = [i for i in node.input if i and i not in consts]
        if reads != [current]:
            raise ChainError(f"{where} reads {reads}: not a chain (expected only {current!r})")
        if node.op_type not in _OPS:
            raise ChainError(f"{where} is not supported by the checker")
        try:
            new, shape = _OPS[node.op_type](list(node.input), current, shape, consts, attrs)
        except (KeyError, ValueError, IndexError, TypeError) as e:
            raise ChainError(f"{where}: {e}") from None
        for layer in new:
            n = layer.weight.shape[1] if isinstance(layer, Dense) else layer.size if isinstance(layer, Relu) \
                else layer.scale_lo.shape[0]
            if n != sizes[-1]:
                raise ChainError(f"{where}: reads {n} values, its input has {sizes[-1]}")
            layers.append(layer)
            sizes.append(layer.weight.shape[0] if isinstance(layer, Dense) else sizes[-1])
        if math.prod(shape) != sizes[-1]:
            raise ChainError(f"{where}: shape {shape} does not match size {sizes[-1]}")
        current = node.output[0]
    if graph.output[0].name != current:
        raise ChainError(f"the graph output {graph.output[0].name!r} is not the end of the chain ({current!r})")
    return _fuse_shifts(layers, sizes[0])


def _fuse_shifts(layers: list[Layer], n_in: int) -> Chain:
    """The chain with every shift (a :class:`Scale` of scale 1) next to a dense map folded into
    that map's bias interval, rigorously: ``W (x + c) + b = W x + (W c + b)`` before it,
    ``(W x + b) + c`` after it (fewer values to bound, the same function)."""
    out: list[Layer] = []
    for layer in layers:
        prev = out[-1] if out else None
        if _is_shift(layer) and isinstance(prev, Dense):
            out[-1] = Dense(prev.weight, down(prev.bias_lo + layer.bias_lo), up(prev.bias_hi + layer.bias_hi))
        elif isinstance(layer, Dense) and _is_shift(prev):
            c, r = midrad(prev.bias_lo, prev.bias_hi)
            wc, e = mm(layer.weight, c)
            rad = up(e + nonneg_mm_up(np.abs(layer.weight), r))
            out[-1] = Dense(layer.weight, down(down(wc - rad) + layer.bias_lo), up(up(wc + rad) + layer.bias_hi))
        else:
            out.append(layer)
    sizes = [n_in]
    for layer in out:
        sizes.append(layer.weight.shape[0] if isinstance(layer, Dense) else sizes[-1])
    return Chain(tuple(out), tuple(sizes))


def _is_shift(layer: Layer | None) -> bool:
    return isinstance(layer, Scale) and bool(np.all(layer.scale_lo == 1.0) and np.all(layer.scale_hi == 1.0))



def _constant(attrs: dict, where: str) -> np.ndarray:
    if "value" in attrs:
        return numpy_helper.to_array(attrs["value"])
    found = [np.asarray(attrs[k]) for k in ("value_float", "value_floats", "value_int", "value_ints") if k in attrs]
    if not found:
        raise ChainError(f"{where}: unsupported constant {sorted(attrs)}")
    return found[0]


def _flat(c: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``c`` as float64 (exactly), broadcast to ``shape`` (not beyond), flat."""
    c = np.asarray(c)
    out = c.astype(np.float64) if c.dtype.kind in "fiub" else None
    if out is None or not np.array_equal(out.astype(c.dtype), c, equal_nan=c.dtype.kind == "f"):
        raise ValueError(f"constant of type {c.dtype} is not exactly float64")
    if np.broadcast_shapes(c.shape, shape) != tuple(shape):
        raise ValueError(f"constant of shape {c.shape} broadcasts beyond the input's shape {shape}")
    return np.ascontiguousarray(np.broadcast_to(out, shape)).reshape(-1)


def _f64(c: np.ndarray) -> np.ndarray:
    return _flat(c, np.shape(c)).reshape(np.shape(c))


def _elementwise(ins: list[str], cur: str, shape: tuple, consts: dict, attrs: dict, op: str) -> tuple:
    pos = ins.index(cur)
    c = _flat(consts[ins[1 - pos]], shape)
    one, zero = np.ones_like(c), np.zeros_like(c)
    if op == "Add":
        return [Scale(one, one, c, c)], shape
    if op == "Sub":
        return [Scale(one, one, -c, -c) if pos == 0 else Scale(-one, -one, c, c)], shape
    if op == "Mul":
        return [Scale(c, c, zero, zero)], shape
    if pos == 1:
        raise ValueError("division by the input is not affine")
    if not np.all(np.isfinite(c) & (c != 0)):
        raise ValueError("division by zero or a non-finite constant")
    return [Scale(down(1.0 / c), up(1.0 / c), zero, zero)], shape


def _gemm(ins: list[str], cur: str, shape: tuple, consts: dict, attrs: dict) -> tuple:
    if ins[0] != cur or attrs.get("transA", 0) or len(shape) != 2 or shape[0] != 1:
        raise ValueError(f"only x @ B with x of shape [1, n] is supported (got {shape})")
    b = _f64(consts[ins[1]])
    w = b if attrs.get("transB", 0) else b.T
    m = w.shape[0]
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    c = _flat(consts[ins[2]], (1, m)) if len(ins) > 2 and ins[2] else np.zeros(m)
    c_lo, c_hi = (c, c) if beta == 1.0 else imul(beta, beta, c, c)
    if alpha == 1.0:
        return [Dense(w, c_lo, c_hi)], (1, m)
    z = np.zeros(m)
    return [Dense(w, z, z), Scale(np.full(m, alpha), np.full(m, alpha), c_lo, c_hi)], (1, m)


def _matmul(ins: list[str], cur: str, shape: tuple, consts: dict, attrs: dict) -> tuple:
    if ins[0] == cur:
        b = _f64(consts[ins[1]])
        if math.prod(shape[:-1]) != 1 or b.ndim not in (1, 2):
            raise ValueError(f"only a vector times a matrix is supported (got {shape} @ {b.shape})")
        w = b.T if b.ndim == 2 else b[None, :]
        return [Dense(w, np.zeros(w.shape[0]), np.zeros(w.shape[0]))], shape[:-1] + b.shape[1:]
    a = _f64(consts[ins[0]])
    if a.ndim != 2 or shape not in ((a.shape[1],), (a.shape[1], 1)):
        raise ValueError(f"only a matrix times a vector is supported (got {a.shape} @ {shape})")
    return [Dense(a, np.zeros(a.shape[0]), np.zeros(a.shape[0]))], (a.shape[0],) + shape[1:]


def _conv(ins: list[str], cur: str, shape: tuple, consts: dict, attrs: dict) -> tuple:
    """A 2-D convolution as its dense matrix (every entry one weight: exact)."""
    w = _f64(consts[ins[1]])
    if ins[0] != cur or len(shape) != 4 or shape[0] != 1 or w.ndim != 4:
        raise ValueError(f"only 2-D convolutions of one image are supported (input {shape})")
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
        raise ValueError(f"auto_pad {attrs['auto_pad']!r} is not supported")
    _, c, h, wd = shape
    m, cg, kh, kw = w.shape
    g = int(attrs.get("group", 1))
    pt, pl, pb, pr = attrs.get("pads", [0, 0, 0, 0])
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    if cg * g != c or m % g:
        raise ValueError(f"weights {w.shape} with group {g} do not fit {c} channels")
    ho, wo = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    om, oc, oi, oj, oh, ow = np.meshgrid(*(np.arange(n) for n in (m, cg, kh, kw, ho, wo)), indexing="ij")
    ih, iw, ic = oh * sh - pt + oi * dh, ow * sw - pl + oj * dw, (om // (m // g)) * cg + oc
    ok = (ih >= 0) & (ih < h) & (iw >= 0) & (iw < wd)
    dense = np.zeros((m * ho * wo, c * h * wd))
    dense[((om * ho + oh) * wo + ow)[ok], ((ic * h + ih) * wd + iw)[ok]] = w[om, oc, oi, oj][ok]
    bias = np.repeat(_f64(consts[ins[2]]), ho * wo) if len(ins) > 2 and ins[2] else np.zeros(m * ho * wo)
    return [Dense(dense, bias, bias)], (1, m, ho, wo)


def _batchnorm(ins: list[str], cur: str, shape: tuple, consts: dict, attrs: dict) -> tuple:
    """``gamma (x - mean) / sqrt(var + eps) + beta`` with the scale and shift as intervals."""
    if attrs.get("training_mode", 0) or ins[0] != cur or len(shape) < 2 or shape[0] != 1:
        raise ValueError(f"only inference on one sample is supported (input {shape})")
    gamma, beta, mean, var = (_f64(consts[n]) for n in ins[1:5])
    eps = float(attrs.get("epsilon", 1e-5))
    d_lo, d_hi = down(np.sqrt(down(var + eps))), up(np.sqrt(up(var + eps)))
    if not np.all(d_lo > 0):
        raise ValueError("var + epsilon is not positive")
    s_lo = down(np.where(gamma >= 0, gamma / d_hi, gamma / d_lo))
    s_hi = up(np.where(gamma >= 0, gamma / d_lo, gamma / d_hi))
    m_lo, m_hi = imul(mean, mean, s_lo, s_hi)
    b_lo, b_hi = down(beta - m_hi), up(beta - m_lo)
    per = (1, shape[1]) + (1,) * (len(shape) - 2)
    return [Scale(*(_flat(a.reshape(per), shape) for a in (s_lo, s_hi, b_lo, b_hi)))], shape


def _reshape(ins: list[str], cur: str, shape: tuple, consts: dict, attrs: dict) -> tuple:
    target = [int(d) for d in consts[ins[1]]]
    if not attrs.get("allowzero", 0):
        target = [shape[i] if d == 0 else d for i, d in enumerate(target)]
    if -1 in target:
        rest = math.prod(d for d in target if d != -1)
        target[target.index(-1)] = math.prod(shape) // rest if rest else 0
    return [], tuple(target)


def _axes(ins: list[str], consts: dict, attrs: dict) -> np.ndarray | None:
    axes = attrs.get("axes", consts[ins[1]] if len(ins) > 1 and ins[1] else None)
    return None if axes is None else np.asarray(axes, dtype=np.int64).reshape(-1)


def _squeeze(ins: list[str], cur: str, shape: tuple, consts: dict, attrs: dict) -> tuple:
    axes = _axes(ins, consts, attrs)
    drop = [i for i, d in enumerate(shape) if d == 1] if axes is None else [int(a) % len(shape) for a in axes]
    return [], tuple(d for i, d in enumerate(shape) if i not in drop)


def _unsqueeze(ins: list[str], cur: str, shape: tuple, consts: dict, attrs: dict) -> tuple:
    axes, out = _axes(ins, consts, attrs), list(shape)
    for a in sorted(int(a) % (len(shape) + len(axes)) for a in axes):
        out.insert(a, 1)
    return [], tuple(out)


def _flatten(ins: list[str], cur: str, shape: tuple, consts: dict, attrs: dict) -> tuple:
    axis = int(attrs.get("axis", 1)) % (len(shape) + 1) if shape else 0
    return [], (math.prod(shape[:axis]), math.prod(shape[axis:]))


def _identity(ins: list[str], cur: str, shape: tuple, consts: dict, attrs: dict) -> tuple:
    if len(ins) > 2 and ins[2] and bool(np.asarray(consts[ins[2]]).reshape(-1)[0]):
        raise ValueError("Dropout in training mode")
    return [], shape


_OPS = {
    "Gemm": _gemm, "MatMul": _matmul, "Conv": _conv, "BatchNormalization": _batchnorm,
    "Relu": lambda ins, cur, shape, consts, attrs: ([Relu(math.prod(shape))], shape),
    "Flatten": _flatten, "Reshape": _reshape, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Identity": _identity, "Dropout": _identity,
    **{op: (lambda ins, cur, shape, consts, attrs, op=op: _elementwise(ins, cur, shape, consts, attrs, op))
       for op in ("Add", "Sub", "Mul", "Div")},
}
