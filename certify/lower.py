"""Lower, solve, lift: each property kind becomes canonical :class:`certify.problem.Problem` s.

``LOWERINGS[kind](property, context)`` returns a list of :class:`Lowered`; the
property HOLDS when every problem in the list has no solution, and a solution ``x`` of any
of them is mapped back to the user's terms by that problem's ``lift``.

Kinds that change the question's variables build an augmented network (see
:mod:`certify.augment`) and replay counterexamples on the original model through a
:class:`~certify.augment.MappedOracle` (numpy float64 map, then onnxruntime):

* ``robustness``: the (clipped) ball is the box; L2 is checked on its enclosing L-inf box.
* ``output_range``: the box; one unsafe half-space per bound.
* ``monotonicity``: pairwise: variables ``(x, d)``, a two-copy product net over ``[x; x']``;
  path: variable ``a``, a two-copy net over ``[image(a); image(reference)]``.
* ``blur_tolerance``: per kernel, variable ``t`` (strength), one prepended linear layer;
  envelope: the per-pixel box.
* ``brightness_contrast``: variables ``(c, b)``, a prepended linear layer (+ clamp).
* ``vnnlib``: the file's boxes and disjuncts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from certify.augment import BallOracle, Front, MappedOracle, clamp_nodes, compose, front_linear
from certify.errors import ShapeMismatch, SpecError
from certify.network import Network, Node, Op
from certify.problem import Box, HalfSpaces, Problem
from certify.spec import (
    BlurTolerance,
    BrightnessContrast,
    Kernel,
    LocalRobustness,
    Monotonicity,
    OutputRange,
    OutputSelector,
    Property,
    SpecDocument,
    VnnLib,
    as_array,
)

if TYPE_CHECKING:
    from certify.replay import Oracle


@dataclass(frozen=True, slots=True)
class Lowered:
    """One canonical problem and the map of its counterexamples back to the property's terms.

    ``oracle`` replays counterexamples when the problem's network is not the model file's
    (a lowering that builds a product or prepends layers); None means "the model file".
    """

    problem: Problem
    lift: Callable[[np.ndarray], dict[str, Any]]
    oracle: Oracle | None = None
    #: False when the problem over-approximates the property (a proof covers the property, but
    #: a counterexample of the problem may lie outside it and then only replays if it is a member).
    exact: bool = True


@dataclass(frozen=True, slots=True, eq=False)
class LowerContext:
    """What every lowering rule gets besides its property.

    ``oracle`` runs the *original* model on one model input: onnxruntime on the model file
    when its path is known, else certify's own IR (not independent; for library callers
    that have no file).
    """

    network: Network
    base_dir: Path
    oracle: Oracle
    model_path: Path | None = None


def make_context(network: Network, base_dir: Path = Path("."), model_path: str | Path | None = None) -> LowerContext:
    """The context for lowering properties on ``network`` (loaded from ``model_path`` if given)."""
    from certify.augment import NetworkOracle
    from certify.replay import OnnxOracle

    path = None if model_path is None else Path(model_path)
    oracle: Oracle = OnnxOracle(path) if path is not None else NetworkOracle(network)
    return LowerContext(network, Path(base_dir), oracle, path)


def lower(prop: Property, network: Network, base_dir: Path = Path("."),
          model_path: str | Path | None = None, *, context: LowerContext | None = None) -> list[Lowered]:
    """The problems whose joint infeasibility proves ``prop`` on ``network``.

    ``base_dir`` resolves relative file paths in ``prop`` (the spec file's folder);
    ``model_path`` is the ONNX file ``network`` was loaded from: lowerings that augment the
    network replay their counterexamples on it in onnxruntime.
    """
    try:
        rule = LOWERINGS[prop.kind]
    except KeyError:
        raise SpecError(f"kind: no lowering for {prop.kind!r}; known: {', '.join(LOWERINGS)}") from None
    return rule(prop, context or make_context(network, base_dir, model_path))


def lower_document(doc: SpecDocument, network: Network, base_dir: Path | None = None,
                   model_path: str | Path | None = None) -> list[Lowered]:
    """Every property of ``doc`` lowered, in order; errors name the file and the property.

    Unnamed problems of a several-property document are named ``kind[i]`` (with the
    lowering's own suffix, e.g. ``robustness[0]#1`` for a sample).
    """
    base = doc.base_dir if base_dir is None else base_dir
    ctx = make_context(network, base, model_path)
    several = len(doc.properties) > 1
    out: list[Lowered] = []
    for i, prop in enumerate(doc.properties):
        where = f"properties[{i}]." if several else ""
        try:
            lowered = lower(prop, network, context=ctx)
        except SpecError as exc:
            raise type(exc)(f"{doc.source}: {where}{exc}") from None
        if several and not prop.name:
            default = prop.kind
            lowered = [replace(lw, problem=replace(
                lw.problem, name=f"{prop.kind}[{i}]" + lw.problem.name.removeprefix(default)))
                for lw in lowered]
        out.extend(lowered)
    return out


# ---------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------

def load_array(value: str | list[Any], base_dir: Path, field: str = "input") -> np.ndarray:
    """A spec's array (inline numbers or a file path) as float64, in the shape it was given."""
    if isinstance(value, str):
        from certify.io.arrays import read_array

        return read_array(value, base_dir, field)
    try:
        return as_array(value)
    except ValueError as exc:
        raise SpecError(f"{field}: {exc}") from None


def load_input(value: str | list[Any], network: Network, base_dir: Path, field: str = "input") -> np.ndarray:
    """A spec's ``input`` (inline numbers or a file) as float64 of ``network.input_shape``."""
    x0 = load_array(value, base_dir, field)
    return fit_input(x0, network, field, "values")


def fit_input(x: np.ndarray, network: Network, field: str, what: str = "values") -> np.ndarray:
    """``x`` reshaped to the model's input shape; :class:`ShapeMismatch` naming ``field`` if sizes differ."""
    if x.size != network.input_size:
        raise ShapeMismatch(
            f"{field}: spec gives {x.size} input {what} (shape {x.shape}), "
            f"model expects {network.input_size} (shape {network.input_shape})"
        )
    return x.reshape(network.input_shape)


def load_bound(value: float | list[Any], network: Network, field: str) -> np.ndarray:
    """A number (broadcast) or an array with the model's input size, as the input shape."""
    if isinstance(value, (int, float)):
        return np.full(network.input_shape, float(value))
    return fit_input(as_array(value), network, field)


def predict(network: Network, x: np.ndarray) -> np.ndarray:
    """``net(x)`` flattened to float64, for one input ``x`` of the network's input shape.

    The input is rounded to float32 first (what onnxruntime would see).
    """
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32)).to(device=network.device, dtype=network.dtype)
    with torch.no_grad():
        y = network.forward(xt.reshape(1, *network.input_shape))
    return y.reshape(-1).double().cpu().numpy()


def classes(label: int | str, targets: list[int] | None, y0: np.ndarray, where: str = "input") -> tuple[int, list[int]]:
    """The label (``predicted``: the argmax of ``y0``) and the target classes, checked against ``y0``'s size."""
    n_out = y0.size
    lab = int(np.argmax(y0)) if label == "predicted" else int(label)
    if not 0 <= lab < n_out:
        raise SpecError(f"label: {lab} is not a class of a model with {n_out} outputs")
    targ = list(targets) if targets is not None else [j for j in range(n_out) if j != lab]
    bad = [j for j in targ if not 0 <= j < n_out]
    if bad:
        raise SpecError(f"targets: {bad} are not classes of a model with {n_out} outputs")
    if lab in targ:
        raise SpecError(f"targets: contains the label {lab} (the model's prediction at {where})")
    return lab, targ


def check_selector(sel: OutputSelector, n_out: int, field: str) -> None:
    """Output indices of ``sel`` must exist in a model with ``n_out`` outputs."""
    bad = [j for j in sel.indices() if j >= n_out]
    if bad:
        key = "output" if sel.output is not None else "margin"
        raise SpecError(f"{field}{key}: {bad} not an output of a model with {n_out} outputs")


def _name(prop: Property, suffix: str = "") -> str:
    return (prop.name or prop.kind) + suffix


# ---------------------------------------------------------------------------------------
# kind: robustness
# ---------------------------------------------------------------------------------------

def robustness_box(x0: np.ndarray, eps: float | np.ndarray, clip: tuple[float, float] | None) -> Box:
    """``[x0 - eps, x0 + eps]`` intersected with ``[lo, hi]``; SpecError if that is empty."""
    lower_, upper = x0 - eps, x0 + eps
    if clip is not None:
        lo, hi = clip
        lower_, upper = np.maximum(lower_, lo), np.minimum(upper, hi)
        if np.any(lower_ > upper):
            shown = eps if np.ndim(eps) == 0 else "per feature"
            raise SpecError(
                f"clip: the eps-ball around input lies outside [{lo}, {hi}] "
                f"(input ranges over [{x0.min()}, {x0.max()}], eps = {shown})"
            )
    return Box(lower_, upper)


def margin_halfspaces(label: int, targets: list[int], n_out: int) -> tuple[HalfSpaces, ...]:
    """One disjunct per target ``j``: ``y_label - y_j <= 0`` (``j`` scores at least as high)."""
    out = []
    for j in targets:
        row = np.zeros((1, n_out))
        row[0, label], row[0, j] = 1.0, -1.0
        out.append(HalfSpaces(row, np.zeros(1)))
    return tuple(out)


def robustness_centers(prop: LocalRobustness, ctx: LowerContext) -> list[np.ndarray]:
    """The input (or every sample), each of the model's input shape."""
    net = ctx.network
    if prop.input is not None:
        return [load_input(prop.input, net, ctx.base_dir)]
    if isinstance(prop.samples, str):
        batch = load_array(prop.samples, ctx.base_dir, "samples")
        if batch.size % net.input_size or batch.size == 0:
            raise ShapeMismatch(f"samples: {batch.size} values (shape {batch.shape}) are not a whole "
                                f"number of model inputs of size {net.input_size} (shape {net.input_shape})")
        return list(batch.reshape(-1, *net.input_shape))
    return [load_input(v, net, ctx.base_dir, f"samples[{k}]") for k, v in enumerate(prop.samples or [])]


def lower_robustness(prop: LocalRobustness, ctx: LowerContext) -> list[Lowered]:
    network = ctx.network
    centers = robustness_centers(prop, ctx)
    eps: float | np.ndarray = (prop.eps if not isinstance(prop.eps, list)
                               else fit_input(as_array(prop.eps), network, "eps", "radii"))
    out = []
    for k, x0 in enumerate(centers):
        label, targets = classes(prop.label, prop.targets, predict(network, x0),
                                 "input" if len(centers) == 1 else f"sample {k}")
        oracle = BallOracle(ctx.oracle, x0, float(prop.eps)) if prop.norm == "l2" else None  # type: ignore[arg-type]
        meta = {"kind": prop.kind, "label": str(label), "eps": repr(prop.eps) if np.ndim(eps) == 0 else "per-feature",
                "targets": ",".join(map(str, targets)), "norm": prop.norm}
        if prop.norm == "l2":
            meta["note"] = ("L2 ball checked on its enclosing L-inf box: HOLDS covers the box; "
                            "a counterexample counts only inside the ball")
        problem = Problem(
            network=network,
            box=robustness_box(x0, eps, prop.clip),
            unsafe=margin_halfspaces(label, targets, network.output_size),
            name=_name(prop, f"#{k}" if len(centers) > 1 else ""),
            meta=meta,
        )
        out.append(Lowered(problem, _robustness_lift(network, x0, label), oracle, exact=prop.norm != "l2"))
    return out


def _robustness_lift(network: Network, x0: np.ndarray, label: int) -> Callable[[np.ndarray], dict[str, Any]]:
    def lift(x: np.ndarray) -> dict[str, Any]:
        x = np.asarray(x, dtype=np.float64).reshape(network.input_shape)
        delta = x - x0
        return {
            "input": x,
            "perturbation": delta,
            "linf": float(np.max(np.abs(delta))),
            "l2": float(np.linalg.norm(delta.reshape(-1))),
            "label": label,
            "predicted": int(np.argmax(predict(network, x))),
        }
    return lift


# ---------------------------------------------------------------------------------------
# kind: output_range
# ---------------------------------------------------------------------------------------

def region_box(prop: OutputRange | Monotonicity, ctx: LowerContext) -> Box:
    """The input box of a property given as ``lower``/``upper`` or ``input``/``eps``/``clip``."""
    net = ctx.network
    if prop.lower is not None and prop.upper is not None:
        lo, hi = load_bound(prop.lower, net, "lower"), load_bound(prop.upper, net, "upper")
        if np.any(lo > hi):
            raise SpecError(f"lower: exceeds upper at {int(np.sum(lo > hi))} of {lo.size} inputs")
        return Box(lo, hi)
    x0 = load_input(prop.input, net, ctx.base_dir)  # type: ignore[arg-type]
    return robustness_box(x0, float(prop.eps), prop.clip)  # type: ignore[arg-type]


def lower_output_range(prop: OutputRange, ctx: LowerContext) -> list[Lowered]:
    net = ctx.network
    n_out = net.output_size
    unsafe = []
    for k, bound in enumerate(prop.outputs):
        check_selector(bound, n_out, f"outputs[{k}].")
        c = bound.row(n_out)
        if bound.min is not None:  # score <= min
            unsafe.append(HalfSpaces(c[None], np.array([bound.min])))
        if bound.max is not None:  # score >= max
            unsafe.append(HalfSpaces(-c[None], np.array([-bound.max])))
    problem = Problem(net, region_box(prop, ctx), tuple(unsafe), name=_name(prop),
                      meta={"kind": prop.kind, "bounds": str(len(prop.outputs))})

    def lift(x: np.ndarray) -> dict[str, Any]:
        x = np.asarray(x, dtype=np.float64).reshape(net.input_shape)
        y = predict(net, x)
        return {"input": x, "output": y,
                "scores": {b.describe(): float(b.row(n_out) @ y) for b in prop.outputs}}
    return [Lowered(problem, lift)]


# ---------------------------------------------------------------------------------------
# kind: monotonicity
# ---------------------------------------------------------------------------------------

def _pair_rows(c: np.ndarray, increasing: bool, tol: float) -> tuple[HalfSpaces, ...]:
    """Over ``[y_first; y_second]``: violated iff ``g(first) - g(second) >= tol`` (increasing)
    or ``g(second) - g(first) >= tol`` (decreasing)."""
    row = np.concatenate([-c, c]) if increasing else np.concatenate([c, -c])
    return (HalfSpaces(row[None], np.array([-tol])),)


def lower_monotonicity(prop: Monotonicity, ctx: LowerContext) -> list[Lowered]:
    check_selector(prop.selector, ctx.network.output_size, "")
    if prop.form == "pairwise":
        return [_lower_pairwise(prop, ctx)]
    return [_lower_path(prop, ctx)]


def _lower_pairwise(prop: Monotonicity, ctx: LowerContext) -> Lowered:
    """Variables ``z = (x, d)``: ``x`` in the box, ``d >= 0`` the growth of the chosen features.

    The front builds ``[x; x']`` with ``x' = x`` except ``x'_f = min(x_f + d, upper_f)`` on the
    chosen features (``min`` as ``v - relu(v - upper)``), so (x, x') ranges over exactly the pairs
    ``lower <= x <= x' <= upper`` (with ``x' - x <= max_step``) that differ only in the features.
    """
    net = ctx.network
    n, shape = net.input_size, net.input_shape
    box = region_box(prop, ctx)
    feats = list(prop.features or [])
    bad = [f for f in feats if f >= n]
    if bad:
        raise SpecError(f"features: {bad} out of range for a model with {n} inputs (flat indices 0..{n - 1})")
    k = len(feats)
    lo, hi = box.lower.reshape(-1), box.upper.reshape(-1)
    step = hi[feats] - lo[feats]
    if prop.max_step is not None:
        step = np.minimum(step, prop.max_step)
    w_a = np.zeros((n + k, 2 * n))
    w_a[np.arange(n), np.arange(n)] = 1.0
    w_a[np.arange(n), n + np.arange(n)] = 1.0
    w_a[n + np.arange(k), n + np.array(feats)] = 1.0
    w_b = np.zeros((n + k, k))
    w_b[feats, np.arange(k)] = 1.0
    w_b[n + np.arange(k), np.arange(k)] = 1.0
    w_c = np.zeros((k, 2 * n))
    w_c[np.arange(k), n + np.array(feats)] = 1.0
    z, a = front_linear(n + k, w_a, np.zeros(2 * n), net, "pair")
    b = Node("pair_over", Op.LINEAR, (z.name,), (k,),
             params={"weight": _param(w_b, net), "bias": _param(-hi[feats], net)})
    r = Node("pair_relu", Op.RELU, (b.name,), (k,))
    c_ = Node("pair_cut", Op.LINEAR, (r.name,), (2 * n,),
              params={"weight": _param(w_c, net), "bias": _param(np.zeros(2 * n), net)})
    pair = Node("pair", Op.SUB, (a.name, c_.name), (2 * n,))
    s0 = Node("pair_x", Op.SLICE, (pair.name,), (n,), attrs={"axis": 0, "start": 0, "stop": n})
    s1 = Node("pair_xp", Op.SLICE, (pair.name,), (n,), attrs={"axis": 0, "start": n, "stop": 2 * n})
    product = compose(Front((z, a, b, r, c_, pair, s0, s1), (s0.name, s1.name)), net,
                      f"{net.name}-monotonicity-pair")
    c = prop.selector.row(net.output_size)
    increasing = prop.direction == "increasing"
    problem = Problem(
        product,
        Box(np.concatenate([lo, np.zeros(k)]), np.concatenate([hi, step])),
        _pair_rows(c, increasing, prop.tol),
        name=_name(prop),
        meta={"kind": prop.kind, "form": "pairwise", "direction": prop.direction, "tol": repr(prop.tol),
              "score": prop.selector.describe(), "features": ",".join(map(str, feats))},
    )

    def pair_of(zz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        zz = np.asarray(zz, dtype=np.float64).reshape(-1)
        x, d = zz[:n], zz[n:]
        xp = x.copy()
        xp[feats] = np.minimum(x[feats] + d, hi[feats])
        return x.reshape(shape), xp.reshape(shape)

    def lift(zz: np.ndarray) -> dict[str, Any]:
        x, xp = pair_of(zz)
        gx, gxp = float(c @ predict(net, x)), float(c @ predict(net, xp))
        return {"x": x, "x_prime": xp, "increase": (xp - x), "score_x": gx, "score_x_prime": gxp,
                "drop": (gx - gxp) if increasing else (gxp - gx)}

    return Lowered(problem, lift, MappedOracle(ctx.oracle, pair_of))


def _lower_path(prop: Monotonicity, ctx: LowerContext) -> Lowered:
    """Variable ``a``; the front builds ``[image(a); image(reference)]`` (the second is a constant)."""
    net = ctx.network
    n, shape = net.input_size, net.input_shape
    bg = (np.full(n, float(prop.background)) if isinstance(prop.background, (int, float))
          else load_input(prop.background, net, ctx.base_dir, "background").reshape(-1))  # type: ignore[arg-type]
    tg = load_input(prop.target, net, ctx.base_dir, "target").reshape(-1)  # type: ignore[arg-type]
    ref = prop.alpha[0] if prop.reference is None else prop.reference
    direction = tg - bg
    ref_image = bg + ref * direction
    weight = np.concatenate([direction, np.zeros(n)])[None]
    z, lin = front_linear(1, weight, np.concatenate([bg, ref_image]), net, "path")
    s0 = Node("path_image", Op.SLICE, (lin.name,), (n,), attrs={"axis": 0, "start": 0, "stop": n})
    s1 = Node("path_reference", Op.SLICE, (lin.name,), (n,), attrs={"axis": 0, "start": n, "stop": 2 * n})
    product = compose(Front((z, lin, s0, s1), (s0.name, s1.name)), net, f"{net.name}-monotonicity-path")
    c = prop.selector.row(net.output_size)
    increasing = prop.direction == "increasing"
    problem = Problem(
        product, Box(np.array([prop.alpha[0]]), np.array([prop.alpha[1]])),
        # violated iff g(reference) - g(image(a)) >= tol (increasing), i.e. rows over [y(a); y(ref)]
        _path_rows(c, increasing, prop.tol),
        name=_name(prop),
        meta={"kind": prop.kind, "form": "path", "direction": prop.direction, "tol": repr(prop.tol),
              "score": prop.selector.describe(), "reference": repr(ref)},
    )

    def images(zz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = float(np.asarray(zz, dtype=np.float64).reshape(-1)[0])
        return (bg + a * direction).reshape(shape), ref_image.reshape(shape)

    def lift(zz: np.ndarray) -> dict[str, Any]:
        image, reference = images(zz)
        g, g_ref = float(c @ predict(net, image)), float(c @ predict(net, reference))
        return {"alpha": float(np.asarray(zz).reshape(-1)[0]), "image": image, "reference_alpha": ref,
                "reference_image": reference, "score": g, "reference_score": g_ref}

    return Lowered(problem, lift, MappedOracle(ctx.oracle, images))


def _path_rows(c: np.ndarray, increasing: bool, tol: float) -> tuple[HalfSpaces, ...]:
    """Over ``[y(a); y(ref)]``: violated iff ``g(ref) - g(a) >= tol`` (increasing) or ``g(a) - g(ref) >= tol``."""
    row = np.concatenate([c, -c]) if increasing else np.concatenate([-c, c])
    return (HalfSpaces(row[None], np.array([-tol])),)


def _param(values: np.ndarray, like: Network) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64)).to(dtype=like.dtype, device=like.device)


# ---------------------------------------------------------------------------------------
# kind: blur_tolerance
# ---------------------------------------------------------------------------------------

def gaussian_kernel(sigma: float, size: int | None = None) -> np.ndarray:
    """A normalized ``size x size`` Gaussian (default size ``2 * ceil(3 sigma) + 1``)."""
    size = size or 2 * int(np.ceil(3 * sigma)) + 1
    r = np.arange(size) - size // 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    k = np.outer(g, g)
    return k / k.sum()


def kernels(kernel: Kernel) -> list[tuple[str, np.ndarray]]:
    """The kernels a family is checked at: ``(description, normalized 2-D kernel)``."""
    if kernel.type == "gaussian":
        sig = kernel.sigma
        sigmas = [float(sig)] if not isinstance(sig, tuple) else (
            [sig[0]] if sig[0] == sig[1] else list(np.linspace(sig[0], sig[1], kernel.steps)))
        size = kernel.size or 2 * int(np.ceil(3 * max(sigmas))) + 1  # one size for the whole family
        return [(f"sigma={s:.4g}", gaussian_kernel(s, size)) for s in sigmas]
    if kernel.type == "box":
        size = int(kernel.size or 1)
        return [(f"box={size}", np.full((size, size), 1.0 / size**2))]
    w = as_array(kernel.weights or [])
    return [("custom", w / w.sum())]


#: Sub-intervals of a Gaussian sigma range, one weight box each (more: tighter, more problems).
SIGMA_PIECES = 16


def gaussian_weight_boxes(sigma: tuple[float, float], size: int, strength: tuple[float, float],
                          pieces: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """Boxes over ``u = t * K_s`` (the strength times the ``size x size`` normalized Gaussian's
    weights, flattened) that together contain every ``s`` in ``sigma`` and ``t`` in ``strength``.

    Sound by monotonicity: on a sub-interval ``[a, b]`` each unnormalized 1-D weight
    ``exp(-r^2 / (2 s^2))`` grows with ``s``, so the 2-D weight ``g_i g_j / S^2`` lies in
    ``[g_i(a) g_j(a) / S(b)^2, g_i(b) g_j(b) / S(a)^2]``; ``t * w`` is then bounded by the corner
    products.  One box per sub-interval (``pieces`` of them).
    """
    r = np.arange(size) - size // 2
    edges = np.linspace(sigma[0], sigma[1], pieces + 1)
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        ga, gb = np.exp(-(r**2) / (2 * a**2)), np.exp(-(r**2) / (2 * b**2))
        w_lo = np.outer(ga, ga).reshape(-1) / gb.sum() ** 2
        w_hi = np.outer(gb, gb).reshape(-1) / ga.sum() ** 2
        prods = np.stack([t * w for t in strength for w in (w_lo, w_hi)])
        slack = 1e-12
        out.append((prods.min(axis=0) - slack, prods.max(axis=0) + slack))
    return out


def shifted_windows(image: np.ndarray, size: int, border: str) -> np.ndarray:
    """``[size * size, *image.shape]``: the image shifted by every kernel offset (row-major),
    so that ``blur(image, K) == sum_k K.flat[k] * windows[k]``."""
    p = size // 2
    pad = [(0, 0)] * (image.ndim - 2) + [(p, p), (p, p)]
    padded = np.pad(image, pad, mode="edge" if border == "edge" else "constant").astype(np.float64)
    h, w = image.shape[-2:]
    return np.stack([padded[..., i:i + h, j:j + w] for i in range(size) for j in range(size)])


@dataclass(frozen=True, slots=True, eq=False)
class NotAMemberOracle:
    """For an over-approximating box: no point of it is known to belong to the property's family,
    so nothing replays (the problem can only prove, never refute)."""

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.array([np.nan])


def blur(image: np.ndarray, k: np.ndarray, border: str = "edge") -> np.ndarray:
    """``k`` correlated with each channel of ``image`` (``(H, W)`` or ``(C, H, W)``), same size."""
    kh, kw = k.shape
    ph, pw = kh // 2, kw // 2
    pad = [(0, 0)] * (image.ndim - 2) + [(ph, ph), (pw, pw)]
    padded = np.pad(image, pad, mode="edge" if border == "edge" else "constant")
    h, w = image.shape[-2:]
    out = np.zeros_like(image, dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            out += k[i, j] * padded[..., i:i + h, j:j + w]
    return out


def image_shape(prop: BlurTolerance, network: Network) -> tuple[int, ...]:
    """The shape the blur sees: ``image_shape`` or the model's input shape (2-D or 3-D)."""
    if prop.image_shape is not None:
        shape = tuple(prop.image_shape)
        if int(np.prod(shape)) != network.input_size:
            raise ShapeMismatch(f"image_shape: {list(shape)} has {int(np.prod(shape))} values, "
                                f"model expects {network.input_size} (shape {network.input_shape})")
        return shape
    shape = tuple(d for d in network.input_shape)
    while len(shape) > 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) not in (2, 3):
        raise ShapeMismatch(f"image_shape: the model's input {network.input_shape} is not an image; "
                            "give image_shape: [H, W] or [C, H, W]")
    return shape


def lower_blur(prop: BlurTolerance, ctx: LowerContext) -> list[Lowered]:
    net = ctx.network
    x0 = load_input(prop.input, net, ctx.base_dir)
    label, targets = classes(prop.label, prop.targets, predict(net, x0))
    unsafe = margin_halfspaces(label, targets, net.output_size)
    meta = {"kind": prop.kind, "label": str(label), "targets": ",".join(map(str, targets))}
    if prop.envelope is not None:
        lo = load_input(prop.envelope.lower, net, ctx.base_dir, "envelope.lower")
        hi = load_input(prop.envelope.upper, net, ctx.base_dir, "envelope.upper")
        if np.any(lo > hi):
            raise SpecError(f"envelope: lower exceeds upper at {int(np.sum(lo > hi))} of {lo.size} pixels")
        problem = Problem(net, Box(lo, hi), unsafe, name=_name(prop), meta={**meta, "form": "envelope"})
        return [Lowered(problem, _robustness_lift(net, x0, label))]
    shape = image_shape(prop, net)
    sharp = x0.reshape(shape)
    out = []
    family = kernels(prop.kernel)  # type: ignore[arg-type]
    for desc, k in family:
        if k.shape[0] > 2 * shape[-2] + 1 or k.shape[1] > 2 * shape[-1] + 1:
            raise SpecError(f"kernel: {k.shape[0]}x{k.shape[1]} kernel is too large for a "
                            f"{shape[-2]}x{shape[-1]} image")
        blurred = blur(sharp, k, prop.border).reshape(-1)
        flat = sharp.reshape(-1)
        z, lin = front_linear(1, (blurred - flat)[None], flat, net, "blur")
        augmented = compose(Front((z, lin), (lin.name,)), net, f"{net.name}-blur")
        problem = Problem(augmented, Box(np.array([prop.strength[0]]), np.array([prop.strength[1]])), unsafe,
                          name=_name(prop, f"[{desc}]" if len(family) > 1 else ""),
                          meta={**meta, "form": "kernel", "kernel": desc})

        def image_at(zz: np.ndarray, flat: np.ndarray = flat, blurred: np.ndarray = blurred) -> list[np.ndarray]:
            t = float(np.asarray(zz, dtype=np.float64).reshape(-1)[0])
            return [((1 - t) * flat + t * blurred).reshape(net.input_shape)]

        def lift(zz: np.ndarray, desc: str = desc, image_at: Callable[..., list[np.ndarray]] = image_at) -> dict[str, Any]:
            (image,) = image_at(zz)
            return {"strength": float(np.asarray(zz).reshape(-1)[0]), "kernel": desc,
                    "blurred": image, "label": label, "predicted": int(np.argmax(predict(net, image)))}

        out.append(Lowered(problem, lift, MappedOracle(ctx.oracle, image_at)))
    kernel = prop.kernel
    if kernel is not None and kernel.type == "gaussian" and isinstance(kernel.sigma, tuple) \
            and kernel.sigma[0] < kernel.sigma[1]:
        # The sampled sigmas above find real counterexamples.  To cover every sigma in the range,
        # the image is written as sharp + sum_k u_k (shift_k(sharp) - sharp) with u = t * K_s:
        # linear in u, and a box over u per sigma sub-interval contains the whole family.
        size = family[0][1].shape[0]
        windows = shifted_windows(sharp, size, prop.border).reshape(size * size, -1)
        flat = sharp.reshape(-1)
        for piece, (u_lo, u_hi) in enumerate(gaussian_weight_boxes(kernel.sigma, size, prop.strength, SIGMA_PIECES)):
            z, lin = front_linear(size * size, windows - flat[None], flat, net, "blur_u")
            augmented = compose(Front((z, lin), (lin.name,)), net, f"{net.name}-blur-range")
            problem = Problem(augmented, Box(u_lo, u_hi), unsafe,
                              name=_name(prop, f"[sigma-range part {piece + 1}]"),
                              meta={**meta, "form": "sigma-range weight box",
                                    "note": "sound box over t * kernel weights; proves, never refutes"})

            def lift_u(u: np.ndarray, flat: np.ndarray = flat, windows: np.ndarray = windows) -> dict[str, Any]:
                image = flat + np.asarray(u, dtype=np.float64).reshape(-1) @ (windows - flat[None])
                return {"weights_times_strength": np.asarray(u), "blurred": image.reshape(net.input_shape),
                        "label": label, "note": "a point of the over-approximation, not a member of the family"}

            out.append(Lowered(problem, lift_u, NotAMemberOracle(), exact=False))
    return out


# ---------------------------------------------------------------------------------------
# kind: brightness_contrast
# ---------------------------------------------------------------------------------------

def lower_brightness(prop: BrightnessContrast, ctx: LowerContext) -> list[Lowered]:
    """Variables ``(c, b)``; the front is ``c * x0 + b`` (linear in c, b), clamped to ``clip``."""
    net = ctx.network
    x0 = load_input(prop.input, net, ctx.base_dir)
    label, targets = classes(prop.label, prop.targets, predict(net, x0))
    flat = x0.reshape(-1)
    n = flat.size
    z, lin = front_linear(2, np.stack([flat, np.ones(n)]), np.zeros(n), net, "light")
    nodes: tuple[Node, ...] = (z, lin)
    if prop.clip is not None:
        nodes += clamp_nodes(lin, prop.clip[0], prop.clip[1], net, "light_clip")
    augmented = compose(Front(nodes, (nodes[-1].name,)), net, f"{net.name}-brightness")
    box = Box(np.array([prop.contrast[0], prop.brightness[0]]), np.array([prop.contrast[1], prop.brightness[1]]))
    problem = Problem(augmented, box, margin_halfspaces(label, targets, net.output_size), name=_name(prop),
                      meta={"kind": prop.kind, "label": str(label), "targets": ",".join(map(str, targets))})

    def image_at(zz: np.ndarray) -> list[np.ndarray]:
        c, b = np.asarray(zz, dtype=np.float64).reshape(-1)[:2]
        image = c * flat + b
        if prop.clip is not None:
            image = np.clip(image, prop.clip[0], prop.clip[1])
        return [image.reshape(net.input_shape)]

    def lift(zz: np.ndarray) -> dict[str, Any]:
        c, b = np.asarray(zz, dtype=np.float64).reshape(-1)[:2]
        (image,) = image_at(zz)
        return {"contrast": float(c), "brightness": float(b), "image": image, "label": label,
                "predicted": int(np.argmax(predict(net, image)))}

    return [Lowered(problem, lift, MappedOracle(ctx.oracle, image_at))]


# ---------------------------------------------------------------------------------------
# kind: vnnlib
# ---------------------------------------------------------------------------------------

def lower_vnnlib(prop: VnnLib, ctx: LowerContext) -> list[Lowered]:
    from certify.io.vnnlib import parse_vnnlib, to_problems

    path = ctx.base_dir / prop.path
    if not path.is_file():
        raise SpecError(f"path: no such file {str(path)!r}")
    problems = to_problems(parse_vnnlib(path), ctx.network, name=_name(prop))

    def lift(x: np.ndarray) -> dict[str, Any]:
        return {"input": np.asarray(x, dtype=np.float64).reshape(ctx.network.input_shape)}
    return [Lowered(p, lift) for p in problems]


#: How each property kind becomes canonical problems.  Add new kinds here.
# (typed with Any: each rule takes its own kind of Property)
LOWERINGS: dict[str, Callable[[Any, LowerContext], list[Lowered]]] = {
    "robustness": lower_robustness,
    "output_range": lower_output_range,
    "monotonicity": lower_monotonicity,
    "blur_tolerance": lower_blur,
    "brightness_contrast": lower_brightness,
    "vnnlib": lower_vnnlib,
}
