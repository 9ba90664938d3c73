"""kind ``robustness``: the (clipped) ball is the box; L2 is checked on its enclosing L-inf box."""

from __future__ import annotations

import numpy as np

from certify.augment import BallOracle
from certify.errors import ShapeMismatch
from certify.lower.common import (
    LowerContext,
    Lowered,
    _name,
    _robustness_lift,
    classes,
    fit_input,
    load_array,
    load_input,
    margin_halfspaces,
    predict,
    robustness_box,
)
from certify.problem import Problem
from certify.spec import LocalRobustness, as_array


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
