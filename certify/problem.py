"""The one canonical problem form every engine solves.

A :class:`Problem` asks: *does there exist* ``x`` in ``box`` such that, for some ``k``,
``A_k @ net(x) <= b_k`` (every row of disjunct ``k`` holds)?  If yes, the property is
VIOLATED (``x`` is a counterexample); if no such ``x`` exists, the property HOLDS.

``net(x)`` is flattened to a vector of ``network.output_size`` entries (row-major).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from certify.network import Network

#: The largest finite float32: every model input is float32, so a box must stay within it.
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, slots=True, eq=False)
class Box:
    """An axis-aligned box ``lower <= x <= upper`` with the network's input shape."""

    lower: np.ndarray
    upper: np.ndarray

    def __post_init__(self) -> None:
        if self.lower.shape != self.upper.shape:
            raise ValueError(f"box bounds differ in shape: {self.lower.shape} vs {self.upper.shape}")
        if np.any(self.lower > self.upper):
            raise ValueError("box has lower > upper")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.lower.shape)

    @property
    def center(self) -> np.ndarray:
        return (self.lower + self.upper) / 2

    def contains(self, x: np.ndarray, tol: float = 0.0) -> bool:
        x = np.asarray(x).reshape(self.lower.shape)
        return bool(np.all(x >= self.lower - tol) and np.all(x <= self.upper + tol))

    @property
    def holds_float32_point(self) -> bool:
        """Whether some float32 input lies inside: every coordinate's interval contains a float32
        value.  False when, e.g., an input is fixed to 0.1 exactly (``lower == upper``)."""
        lo = np.asarray(self.lower, dtype=np.float64)
        hi = np.asarray(self.upper, dtype=np.float64)
        lo32 = lo.astype(np.float32)
        lo32 = np.where(lo32.astype(np.float64) < lo, np.nextafter(lo32, np.float32(np.inf)), lo32)
        return bool(np.all(lo32.astype(np.float64) <= hi))

    def snap_float32(self, x: np.ndarray) -> np.ndarray:
        """``x`` clipped into the box as float32 values that really lie inside it (where it has
        them: see :attr:`holds_float32_point`)."""
        lo, hi = self.lower.astype(np.float64), self.upper.astype(np.float64)
        x32 = np.clip(np.asarray(x, dtype=np.float64).reshape(lo.shape), lo, hi).astype(np.float32)
        # Rounding to float32 may step just outside the box: move one ulp inward where it did.
        below = x32.astype(np.float64) < lo
        x32 = np.where(below, np.nextafter(x32, np.float32(np.inf)), x32)
        above = x32.astype(np.float64) > hi
        return np.where(above, np.nextafter(x32, np.float32(-np.inf)), x32)

    def clip(self, x: np.ndarray) -> np.ndarray:
        """``x`` clipped into the box in float64 (box shape): inside it exactly."""
        lo, hi = self.lower.astype(np.float64), self.upper.astype(np.float64)
        return np.clip(np.asarray(x, dtype=np.float64).reshape(lo.shape), lo, hi)

    def candidate(self, x: np.ndarray) -> np.ndarray | None:
        """The input a counterexample near ``x`` is replayed on: snapped to float32 inside the box
        where the box has float32 points (None if rounding cannot stay inside), else ``x``
        clipped into the box in float64 (see :mod:`certify.replay`)."""
        if not self.holds_float32_point:
            return self.clip(x)
        x32 = self.snap_float32(x)
        return x32 if self.contains(x32.astype(np.float64)) else None


@dataclass(frozen=True, slots=True, eq=False)
class HalfSpaces:
    """A conjunction of rows ``A @ y <= b``; ``A: [k, n_out]``, ``b: [k]``."""

    A: np.ndarray
    b: np.ndarray

    def __post_init__(self) -> None:
        if self.A.ndim != 2 or self.b.shape != (self.A.shape[0],):
            raise ValueError(f"HalfSpaces needs A [k, n] and b [k], got {self.A.shape}, {self.b.shape}")

    def margin(self, y: np.ndarray) -> float:
        """``max_i (A y - b)_i``: <= 0 exactly when ``y`` lies in this conjunction."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        # A zero coefficient ignores its output even when that output overflowed to +-inf.
        with np.errstate(invalid="ignore"):
            terms = np.where(self.A != 0, self.A * y, 0.0)
        return float(np.max(terms.sum(axis=1) - self.b))


@dataclass(frozen=True, slots=True, eq=False)
class Problem:
    """Exists ``x`` in ``box`` with ``net(x)`` in some disjunct of ``unsafe``?"""

    network: Network
    box: Box
    unsafe: tuple[HalfSpaces, ...]
    name: str = ""
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from certify.errors import ShapeMismatch, SpecError

        reach = np.maximum(np.abs(self.box.lower), np.abs(self.box.upper))
        if reach.size and not reach.max() <= FLOAT32_MAX:
            i = int(np.nanargmax(np.where(np.isnan(reach), np.inf, reach)))
            raise SpecError(f"the input box reaches {reach.flat[i]:.6g} at input {i}, outside float32's range "
                            f"(+-{FLOAT32_MAX:.8g}): the model's float32 input cannot take such a value")
        if self.box.shape != self.network.input_shape:
            raise ShapeMismatch(
                f"spec gives {int(np.prod(self.box.shape))} inputs of shape {self.box.shape}, "
                f"model expects shape {self.network.input_shape}"
            )
        if not self.unsafe:
            raise ValueError("a Problem needs at least one unsafe disjunct")
        for hs in self.unsafe:
            if hs.A.shape[1] != self.network.output_size:
                raise ShapeMismatch(
                    f"spec constrains {hs.A.shape[1]} outputs, model has {self.network.output_size}"
                )

    def violation(self, y: np.ndarray) -> float:
        """``min_k margin_k(y)``: <= 0 exactly when ``y`` is unsafe."""
        return min(hs.margin(y) for hs in self.unsafe)
