"""The independent oracle: every counterexample is replayed in onnxruntime before it counts.

An :class:`Oracle` evaluates the *original* model file (not certify's IR) on one input of the
problem's input shape.  :func:`replay` snaps the candidate into the problem's box (in the
model's float32 precision), runs it, and returns a replayed :class:`Counterexample` only if the
output really lies in the unsafe set.

One exception: a box that holds *no* float32 point (some input is fixed to a real value such as
0.1 that float32 cannot represent, so every float32 input lies outside the box) can never be
replayed in float32.  Only for such boxes the candidate itself (float64, clipped into the box) is
replayed on a float64 copy of the original model (:func:`float64_copy`: the same graph with
float32 tensors and types switched to float64), and the counterexample records
``precision="float64"``.  Wherever the box holds float32 points the strict float32 replay stays
the rule.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from certify.errors import ModelError
from certify.io.runtime import ReferenceSession, first_line, float64_copy, load_proto, ort_errors, run_session, session
from certify.problem import Problem
from certify.verdict import Counterexample

log = logging.getLogger(__name__)


class Oracle(Protocol):
    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs (flat, float64) of the original model for one input ``x`` (problem input shape)."""
        ...


@runtime_checkable
class Float64Oracle(Protocol):
    """An oracle that can also run the original model in float64 (for boxes without float32 points)."""

    def run_float64(self, x: np.ndarray) -> np.ndarray:
        """Outputs (flat, float64) of a float64 copy of the original model for ``x`` (float64).
        Raises :class:`~certify.errors.ModelError` when no such copy can run."""
        ...


@dataclass(eq=False)
class OnnxOracle:
    """Runs an ONNX file (``X.onnx``, or VNN-COMP's ``X.onnx.gz`` read in memory) in onnxruntime
    (CPU), one sample at a time; the sessions are cached.  :meth:`run_float64` runs a float64
    copy of the same graph (built on first use)."""

    path: Path
    _session: Any = field(default=None, init=False, repr=False)
    _session64: Any = field(default=None, init=False, repr=False)
    _error64: str | None = field(default=None, init=False, repr=False)

    def _open(self) -> Any:
        if self._session is None:
            from certify.io.files import is_gzipped, read_bytes, resolve

            path = resolve(self.path)
            source: str | bytes = read_bytes(path) if is_gzipped(path) else os.fspath(path)
            self._session = session(source)
        return self._session

    def run(self, x: np.ndarray) -> np.ndarray:
        return run_session(self._open(), np.asarray(x, dtype=np.float32))

    def _open64(self) -> Any:
        if self._error64 is not None:
            raise ModelError(self._error64)
        if self._session64 is None:
            try:
                copy = float64_copy(load_proto(self.path))
            except ort_errors() as exc:
                self._error64 = f"no float64 copy of {self.path}: {first_line(exc)}"
                raise ModelError(self._error64) from exc
            try:
                self._session64 = session(copy.SerializeToString())
            except ort_errors() as exc:  # e.g. no float64 Conv kernel: onnx's reference evaluator
                log.info("the float64 copy of %s runs in onnx's reference evaluator: %s", self.path, first_line(exc))
                self._session64 = ReferenceSession(copy)
        return self._session64

    @property
    def float64_runtime(self) -> str:
        """Which program runs the float64 copy (once it has been opened)."""
        return "onnx-reference" if isinstance(self._session64, ReferenceSession) else "onnxruntime"

    def run_float64(self, x: np.ndarray) -> np.ndarray:
        runner = self._open64()
        try:
            return run_session(runner, np.asarray(x, dtype=np.float64))
        except (*ort_errors(), NotImplementedError, RuntimeError, TypeError, IndexError, KeyError) as exc:
            raise ModelError(f"the float64 copy of {self.path} failed to run: {first_line(exc)}") from exc


# ----------------------------------------------------------------------------- replay


def replay(oracle: Oracle, problem: Problem, x: np.ndarray) -> Counterexample | None:
    """A replayed counterexample if ``x`` (snapped into the box) violates the problem, else None.

    In float32 (the model's precision) wherever the box holds a float32 point; otherwise in
    float64 on the candidate clipped into the box (see the module docstring)."""
    if not problem.box.holds_float32_point:
        return _replay_float64(oracle, problem, x)
    x32 = problem.box.candidate(x)
    if x32 is None:
        log.warning("candidate for %s cannot be represented inside its box in float32", problem.name)
        return None
    y = oracle.run(x32)
    if problem.violation(y) <= 0.0:
        return Counterexample(x=x32, y=y, replayed=True)
    return None


def _replay_float64(oracle: Oracle, problem: Problem, x: np.ndarray) -> Counterexample | None:
    """The float64 replay of a box without float32 points: ``x`` clipped into the box, run on
    the oracle's float64 copy of the model."""
    name = problem.name or "problem"
    if not isinstance(oracle, Float64Oracle):
        log.warning("%s: the box holds no float32 point and this oracle (%s) cannot replay in float64",
                    name, type(oracle).__name__)
        return None
    x64 = problem.box.clip(x)
    try:
        y = oracle.run_float64(x64)
    except ModelError as exc:
        log.warning("%s: the box holds no float32 point and %s", name, exc)
        return None
    if problem.violation(y) <= 0.0:
        runtime = getattr(oracle, "float64_runtime", "onnxruntime")
        return Counterexample(x=x64, y=y, replayed=True, precision="float64", runtime=runtime)
    return None
