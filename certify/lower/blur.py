"""kind ``blur_tolerance``: per kernel, variable ``t`` (strength), one prepended linear layer;
a Gaussian sigma range also gets sound weight boxes (prove, never refute); envelope: the per-pixel box.

Also the image maths the lowering uses: kernels, the blur itself, shifted windows and weight boxes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from certify.augment import Front, MappedOracle, compose, front_linear
from certify.errors import ShapeMismatch, SpecError
from certify.lower.common import (
    LowerContext,
    Lowered,
    _name,
    _robustness_lift,
    classes,
    load_input,
    margin_halfspaces,
    predict,
)
from certify.network import Network
from certify.problem import Box, Problem
from certify.spec import BlurTolerance, Kernel, as_array


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

        def lift(zz: np.ndarray, desc: str = desc,
                 image_at: Callable[..., list[np.ndarray]] = image_at) -> dict[str, Any]:
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
