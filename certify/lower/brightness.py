"""kind ``brightness_contrast``: variables ``(c, b)``, a prepended linear layer (+ clamp)."""

from __future__ import annotations

from typing import Any

import numpy as np

from certify.augment import Front, MappedOracle, clamp_nodes, compose, front_linear
from certify.lower.common import LowerContext, Lowered, _name, classes, load_input, margin_halfspaces, predict
from certify.network import Node
from certify.problem import Box, Problem
from certify.spec import BrightnessContrast


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
