"""An instance: a Problem together with the oracle that replays its counterexamples and the
``lift`` that maps a counterexample back to the user's terms."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from certify.problem import Problem
from certify.replay import Oracle


def _no_lift(x: np.ndarray) -> dict[str, Any]:
    return {"input": x}


@dataclass(frozen=True, slots=True, eq=False)
class Instance:
    problem: Problem
    oracle: Oracle
    lift: Callable[[np.ndarray], dict[str, Any]] = _no_lift
    #: False when the problem over-approximates the property: a counterexample that fails to
    #: replay is then expected (it lies outside the property), not a bug.
    exact: bool = True
    #: The ONNX file the problem's network is exactly (None when the lowering changed the
    #: network, e.g. a two-copy product for monotonicity): what a proof certificate is checked on.
    model: Path | None = None
