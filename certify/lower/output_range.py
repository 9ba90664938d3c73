"""kind ``output_range``: the box; one unsafe half-space per bound."""

from __future__ import annotations

from typing import Any

import numpy as np

from certify.lower.common import LowerContext, Lowered, _name, check_selector, predict, region_box
from certify.problem import HalfSpaces, Problem
from certify.spec import OutputRange


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
