"""Typed answers: every engine returns a :class:`Verdict`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import numpy as np

from certify.proof.certificate import Certificate


class Status(str, Enum):
    HOLDS = "holds"
    VIOLATED = "violated"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, eq=False)
class Counterexample:
    """An input ``x`` (network input shape) and the output ``y`` it produced.

    ``replayed`` is True once onnxruntime reproduced the violation on the original model;
    ``precision`` says in which precision it was replayed: ``"float32"`` (the model's own, the
    rule) or ``"float64"`` (a float64 copy of the model, only for boxes that hold no float32
    point, see :mod:`certify.replay`); ``runtime`` which program ran it: ``"onnxruntime"``, or
    ``"onnx-reference"`` (onnx's reference evaluator, for float64 copies using ops onnxruntime
    has no float64 kernel for).
    """

    x: np.ndarray
    y: np.ndarray
    replayed: bool = False
    precision: str = "float32"
    runtime: str = "onnxruntime"


@dataclass(frozen=True, slots=True)
class ProofNote:
    """What became of a HOLDS's proof: ``checked`` when the independent checker
    (:mod:`certify.proof.check`) accepted its certificate, else why not (``reason``); the
    certificate's node count and the checking time."""

    checked: bool
    reason: str = ""
    nodes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "reason": self.reason, "nodes": self.nodes,
                "seconds": round(self.seconds, 4)}


@dataclass(frozen=True, slots=True, eq=False)
class Verdict:
    status: Status
    engine: str
    seconds: float = 0.0
    reason: str = ""
    counterexample: Counterexample | None = None
    certificate: dict[str, Any] | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    proof: Certificate | None = None  # a HOLDS's proof tree, when the engine made one (certify.proof)
    proof_note: ProofNote | None = None  # what the independent checker said of it

    def with_time(self, seconds: float) -> Verdict:
        return replace(self, seconds=seconds)


def unknown(engine: str, reason: str, seconds: float = 0.0, **stats: Any) -> Verdict:
    return Verdict(Status.UNKNOWN, engine=engine, seconds=seconds, reason=reason, stats=dict(stats))
