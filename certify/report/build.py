"""From result rows to a :class:`Report`: the summary, the figures and each counterexample's view.

Rendering (HTML, Markdown) is :mod:`certify.report.render`; this module decides *what* is shown:
how a counterexample is read (an image or a table), which plots exist, which versions are listed.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np

from certify.report.load import STATUSES, FileVersion, ResultRow, file_versions
from certify.report.plots import Figure, cactus, image_panels, margin_bounds, time_per_instance

#: Tabular counterexamples longer than this show only their first entries.
MAX_TABLE_ENTRIES = 64


@dataclass(frozen=True, slots=True)
class ReportOptions:
    """``image_shape``: (H, W) to read every input as an image; None: decide per row from the
    record's shape hint or a perfect-square input size of at least ``min_square`` values."""

    title: str = "certify report"
    image_shape: tuple[int, int] | None = None
    min_square: int = 16
    expected: dict[tuple[str, str], str] | None = None


@dataclass(frozen=True, slots=True, eq=False)
class CounterexampleView:
    """How a person reads one counterexample.

    ``figure``: images side by side (image inputs); ``input_table``: rows of (index, x,
    original, perturbation) strings (tabular inputs; original/perturbation empty when unknown);
    ``output_table``: (index, y) rows; ``facts``: scalar entries of the lifted counterexample.
    """

    kind: str  # "image" | "table"
    figure: Figure | None
    input_columns: tuple[str, ...]
    input_table: tuple[tuple[str, ...], ...]
    output_table: tuple[tuple[str, str], ...]
    facts: tuple[tuple[str, str], ...]
    replayed: bool
    note: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class Report:
    title: str
    generated: str  # ISO date-time, UTC
    rows: tuple[ResultRow, ...]
    counts: dict[str, int]
    total_seconds: float
    figures: tuple[Figure, ...]
    views: dict[int, CounterexampleView]  # row index -> view
    versions: tuple[FileVersion, ...]
    software: tuple[tuple[str, str], ...]
    mismatches: tuple[int, ...] = field(default_factory=tuple)  # rows contradicting --expected


def build_report(rows: Sequence[ResultRow], options: ReportOptions = ReportOptions()) -> Report:
    """Everything the renderers need, computed once."""
    if options.expected is not None:
        rows = [_with_expected(r, options.expected) for r in rows]
    rows = tuple(rows)
    counts = {s: sum(1 for r in rows if r.status == s) for s in STATUSES}
    figures = tuple(f for f in (time_per_instance(rows), cactus(rows), margin_bounds(rows)) if f is not None)
    views = {k: counterexample_view(r, options, f"cex_{k}") for k, r in enumerate(rows)
             if r.counterexample is not None}
    mismatches = tuple(k for k, r in enumerate(rows)
                       if r.expected is not None and r.status in ("holds", "violated") and r.status != r.expected)
    return Report(
        title=options.title,
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        rows=rows,
        counts=counts,
        total_seconds=float(sum(r.seconds for r in rows)),
        figures=figures,
        views=views,
        versions=tuple(file_versions(rows)),
        software=_software(rows),
        mismatches=mismatches,
    )


def _with_expected(row: ResultRow, expected: dict[tuple[str, str], str]) -> ResultRow:
    from pathlib import Path

    word = expected.get((Path(row.model).name, Path(row.spec).name))
    return replace(row, expected=word) if word is not None else row


def _software(rows: Sequence[ResultRow]) -> tuple[tuple[str, str], ...]:
    from importlib.metadata import PackageNotFoundError, version

    from certify import __version__

    recorded = sorted({r.certify_version for r in rows if r.certify_version})
    out = [("certify (results)", ", ".join(recorded) if recorded else "not recorded"),
           ("certify (this report)", __version__)]
    for pkg in ("torch", "onnxruntime", "numpy", "matplotlib"):
        try:
            out.append((pkg, version(pkg)))
        except PackageNotFoundError:
            out.append((pkg, "not installed"))
    out.append(("python", platform.python_version()))
    return tuple(out)


# ----------------------------------------------------------------------------- counterexamples


def image_shape_for(row: ResultRow, n: int, options: ReportOptions) -> tuple[int, ...] | None:
    """The (H, W) or (H, W, C) shape to draw an ``n``-value input as, or None for a table."""
    if options.image_shape is not None:
        h, w = options.image_shape
        if h * w == n:
            return (h, w)
        if n % (h * w) == 0 and n // (h * w) in (3,):
            return (h, w, 3)
    if row.shape is not None and math.prod(row.shape) == n:
        dims = [d for d in row.shape if d != 1]
        if len(dims) == 2 and min(dims) >= 4:
            return (dims[0], dims[1])
        if len(dims) == 3 and dims[0] == 3 and min(dims[1:]) >= 4:
            return (dims[1], dims[2], 3)  # channels first
        if len(dims) == 3 and dims[2] == 3 and min(dims[:2]) >= 4:
            return (dims[0], dims[1], 3)
        if len(dims) <= 1 and n < options.min_square:
            return None
    side = math.isqrt(n)
    if n >= options.min_square and side * side == n:
        return (side, side)
    return None


def _as_image(flat: np.ndarray, shape: tuple[int, ...], row: ResultRow) -> np.ndarray:
    if len(shape) == 3 and row.shape is not None:
        dims = [d for d in row.shape if d != 1]
        if dims and dims[0] == 3:
            return flat.reshape(3, shape[0], shape[1]).transpose(1, 2, 0)
    return flat.reshape(shape)


def _fmt(v: float) -> str:
    return f"{v:.6g}"


#: Lifted entries that hold the input the model saw, in order of preference.
SHOWN_KEYS: tuple[str, ...] = ("input", "image", "blurred", "x")
#: Lifted entries that hold the unperturbed input the counterexample is compared with.
REFERENCE_KEYS: tuple[str, ...] = ("original", "reference_image", "reference", "sharp")


def counterexample_view(row: ResultRow, options: ReportOptions, name: str) -> CounterexampleView:
    """Image panels (counterexample, original, perturbation magnified) or tables, plus facts.

    The input shown is the lifted counterexample's ``input`` (or ``image``, ``blurred``) when the
    lowering recorded one (a monotonicity or blur counterexample's solver variable is a scalar,
    not the image), else the solver's ``x``; the solver's ``x`` is then listed among the facts."""
    assert row.counterexample is not None
    cex = row.counterexample
    lifted = row.lifted or {}
    arrays: dict[str, np.ndarray] = {}
    facts: list[tuple[str, str]] = []
    for key, value in lifted.items():
        arr = _array(value)
        if arr is not None and arr.size > 1 and (arr.size > 16 or arr.size == cex.x.size):
            arrays[str(key)] = arr.reshape(-1)
        elif arr is not None and arr.size == 1:
            facts.append((str(key), _fmt(float(arr.reshape(-1)[0]))))
        elif isinstance(value, (str, bool)):
            facts.append((str(key), str(value)))
        elif arr is not None and arr.size <= 16:
            facts.append((str(key), ", ".join(_fmt(v) for v in arr.reshape(-1))))
    shown_key = next((k for k in SHOWN_KEYS if k in arrays), None)
    shown = arrays.pop(shown_key) if shown_key is not None else cex.x
    if shown.size != cex.x.size:
        facts.insert(0, ("solver variables x", ", ".join(_fmt(v) for v in cex.x[:16])
                         + (" ..." if cex.x.size > 16 else "")))
    arrays = {k: v for k, v in arrays.items() if v.size == shown.size}
    delta = arrays.pop("perturbation", None)
    ref_key = next((k for k in REFERENCE_KEYS if k in arrays), None)
    original = arrays.pop(ref_key) if ref_key is not None else None
    ref_title = "original" if ref_key in (None, "original") else ref_key.replace("_", " ")
    if original is None and delta is not None:
        original = shown - delta
    if delta is None and original is not None:
        delta = shown - original
    output = tuple((str(j), _fmt(v)) for j, v in enumerate(cex.y))
    shape = image_shape_for(row, shown.size, options)
    if shape is not None:
        title = "counterexample" if shown_key in (None, "input", "x") else f"counterexample ({shown_key})"
        panels: list[tuple[str, np.ndarray, str]] = [(title, _as_image(shown, shape, row), "gray")]
        if original is not None:
            panels.append((ref_title, _as_image(original, shape, row), "gray"))
        for key, arr in arrays.items():
            panels.append((key.replace("_", " "), _as_image(arr, shape, row), "gray"))
        note = ""
        if delta is not None:
            peak = float(np.max(np.abs(delta)))
            panels.append((f"difference, scaled to full range\n(max |d| = {peak:.3g})",
                           _as_image(delta, shape, row), "diverging"))
            note = (f"The difference panel (counterexample minus {ref_title}) is magnified to the full "
                    f"colour range; its largest change is {peak:.4g}.")
        return CounterexampleView("image", image_panels(name, panels), (), (), output, tuple(facts),
                                  cex.replayed, note)
    columns = ["input", "x"] + ([ref_title, "difference"] if original is not None else [])
    table = []
    for i in range(min(shown.size, MAX_TABLE_ENTRIES)):
        cells = [str(i), _fmt(shown[i])]
        if original is not None and delta is not None:
            cells += [_fmt(original[i]), _fmt(delta[i])]
        table.append(tuple(cells))
    note = "" if shown.size <= MAX_TABLE_ENTRIES else f"First {MAX_TABLE_ENTRIES} of {shown.size} inputs shown."
    return CounterexampleView("table", None, tuple(columns), tuple(table), output, tuple(facts), cex.replayed, note)


def _array(value: Any) -> np.ndarray | None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if np.all(np.isfinite(arr)) else None
