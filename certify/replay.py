"""The independent oracle: every counterexample is replayed in onnxruntime before it counts.

An :class:`Oracle` evaluates the *original* model file (not certify's IR) on one input of the
problem's input shape.  :func:`replay` snaps the candidate into the problem's box (in the
model's float32 precision), runs it, and returns a replayed :class:`Counterexample` only if the
output really lies in the unsafe set.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from certify.problem import Box, Problem
from certify.verdict import Counterexample

log = logging.getLogger(__name__)


class Oracle(Protocol):
    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs (flat, float64) of the original model for one input ``x`` (problem input shape)."""
        ...


@dataclass(eq=False)
class OnnxOracle:
    """Runs an ONNX file in onnxruntime (CPU), one sample at a time; the session is cached."""

    path: Path
    _session: Any = field(default=None, init=False, repr=False)

    def _open(self) -> Any:
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(os.fspath(self.path), opts, providers=["CPUExecutionProvider"])
        return self._session

    def run(self, x: np.ndarray) -> np.ndarray:
        sess = self._open()
        inp = sess.get_inputs()[0]
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        feed = np.asarray(x, dtype=np.float32).reshape(shape)
        out = sess.run(None, {inp.name: feed})[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)


def snap_into_box(x: np.ndarray, box: Box) -> np.ndarray:
    """``x`` clipped into ``box`` as float32 values that really lie inside it."""
    lo, hi = box.lower.astype(np.float64), box.upper.astype(np.float64)
    x32 = np.clip(np.asarray(x, dtype=np.float64).reshape(lo.shape), lo, hi).astype(np.float32)
    # Rounding to float32 may step just outside the box: move one ulp inward where it did.
    below = x32.astype(np.float64) < lo
    x32 = np.where(below, np.nextafter(x32, np.float32(np.inf)), x32)
    above = x32.astype(np.float64) > hi
    x32 = np.where(above, np.nextafter(x32, np.float32(-np.inf)), x32)
    return x32


def replay(oracle: Oracle, problem: Problem, x: np.ndarray) -> Counterexample | None:
    """A replayed counterexample if ``x`` (snapped into the box) violates the problem, else None."""
    x32 = snap_into_box(x, problem.box)
    if not problem.box.contains(x32.astype(np.float64)):
        log.warning("candidate for %s cannot be represented inside its box in float32", problem.name)
        return None
    y = oracle.run(x32)
    if problem.violation(y) <= 0.0:
        return Counterexample(x=x32, y=y, replayed=True)
    return None
