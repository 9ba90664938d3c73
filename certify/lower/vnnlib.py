"""kind ``vnnlib``: the file's boxes and disjuncts."""

from __future__ import annotations

from typing import Any

import numpy as np

from certify.errors import SpecError
from certify.lower.common import LowerContext, Lowered, _name
from certify.spec import VnnLib


def lower_vnnlib(prop: VnnLib, ctx: LowerContext) -> list[Lowered]:
    from certify.io.vnnlib import parse_vnnlib, to_problems

    path = ctx.base_dir / prop.path
    if not path.is_file():
        raise SpecError(f"path: no such file {str(path)!r}")
    problems = to_problems(parse_vnnlib(path), ctx.network, name=_name(prop))

    def lift(x: np.ndarray) -> dict[str, Any]:
        return {"input": np.asarray(x, dtype=np.float64).reshape(ctx.network.input_shape)}
    return [Lowered(p, lift) for p in problems]
