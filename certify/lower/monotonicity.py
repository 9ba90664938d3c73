"""kind ``monotonicity``: pairwise: variables ``(x, d)``, a two-copy product net over ``[x; x']``;
path: variable ``a``, a two-copy net over ``[image(a); image(reference)]``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from certify.augment import Front, MappedOracle, compose, front_linear
from certify.errors import SpecError
from certify.lower.common import LowerContext, Lowered, _name, check_selector, load_input, predict, region_box
from certify.network import Network, Node, Op
from certify.problem import Box, HalfSpaces, Problem
from certify.spec import Monotonicity


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
