"""The report's figures, drawn with matplotlib's Agg backend into PNG bytes.

Every function returns a :class:`Figure` (PNG bytes plus alt text) or None when there is
nothing to draw.  matplotlib is imported lazily, and only through :func:`_pyplot`, which selects
the Agg backend for the figure objects it makes (no global ``matplotlib.use``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from certify.report.load import SOLVED, ResultRow

#: Colours of the verdicts, shared by plots and HTML.
STATUS_COLORS: dict[str, str] = {"holds": "#2e7d32", "violated": "#c62828", "unknown": "#9e9e9e",
                                 "error": "#6a1b9a"}

DPI = 100


@dataclass(frozen=True, slots=True)
class Figure:
    """A PNG image: ``name`` (a file stem), ``alt`` (its description) and the bytes."""

    name: str
    alt: str
    png: bytes


def _new_figure(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _short(text: str, n: int = 28) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def time_per_instance(rows: Sequence[ResultRow]) -> Figure | None:
    """Bars of seconds per result, coloured by verdict (log scale when times span > 100x)."""
    if not rows:
        return None
    secs = np.array([max(r.seconds, 1e-3) for r in rows])
    width = min(14.0, max(6.0, 0.18 * len(rows) + 2))
    fig, ax = _new_figure(width, 3.6)
    ax.bar(np.arange(len(rows)), secs, color=[STATUS_COLORS[r.status] for r in rows], width=0.85)
    if secs.max() / secs.min() > 100:
        ax.set_yscale("log")
    if len(rows) <= 40:
        ax.set_xticks(np.arange(len(rows)))
        ax.set_xticklabels([_short(r.label) for r in rows], rotation=60, ha="right", fontsize=7)
    else:
        ax.set_xlabel("instance (in results order)")
    ax.set_ylabel("seconds")
    ax.set_title("Time per instance")
    _status_legend(ax, {r.status for r in rows})
    return Figure("time_per_instance", "Bar chart: verification time per instance, coloured by verdict", _png(fig))


def _status_legend(ax: Any, present: set[str]) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=s) for s, c in STATUS_COLORS.items() if s in present]
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="best")


def cactus(rows: Sequence[ResultRow]) -> Figure | None:
    """Cumulative number of solved instances (holds or violated) against time, one line per
    results file: the VNN-COMP "cactus" plot."""
    groups: dict[str, list[float]] = {}
    names = {r.group for r in rows}
    one_line = len(names) > 8 or len(names) == len(rows)  # one file per result: no comparison to draw
    for r in rows:
        groups.setdefault("all results" if one_line else r.group, [])
        if r.status in SOLVED:
            groups["all results" if one_line else r.group].append(max(r.seconds, 1e-3))
    if not any(groups.values()):
        return None
    fig, ax = _new_figure(6.4, 4.0)
    for name, times in groups.items():
        t = np.sort(np.array(times))
        if t.size == 0:
            continue
        xs = np.concatenate([[t[0]], t])
        ys = np.concatenate([[0], np.arange(1, t.size + 1)])
        ax.step(xs, ys, where="post", label=_short(name, 40), linewidth=1.8)
    all_t = np.array([t for ts in groups.values() for t in ts])
    if all_t.max() / all_t.min() > 20:
        ax.set_xscale("log")
    ax.set_xlabel("time per instance (s)")
    ax.set_ylabel("instances solved")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Cumulative solved vs time ({sum(len(v) for v in groups.values())} of {len(rows)} solved)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return Figure("cactus", "Cactus plot: number of instances solved within a given time", _png(fig))


def margin_bounds(rows: Sequence[ResultRow]) -> Figure | None:
    """Certified lower bounds of each property's unsafe-disjunct margins (> 0: proved), and for
    violated rows the counterexample's margin as a red cross at or below 0."""
    items: list[tuple[ResultRow, str, tuple[float, ...]]] = []
    for r in rows:
        several = len([i for i in r.instances if i.margins]) > 1
        for inst in r.instances:
            if inst.margins:
                items.append((r, f"{r.label} / {inst.name}" if several else r.label, inst.margins))
    if not items:
        return None
    items = items[:60]
    height = max(2.6, 0.28 * len(items) + 1.4)
    fig, ax = _new_figure(7.0, height)
    for k, (r, _, ms) in enumerate(items):
        m = np.array(ms)
        ax.scatter(m, np.full(m.size, k), s=14, color=STATUS_COLORS[r.status], alpha=0.7, zorder=3)
        ax.plot([m.min(), m.max()], [k, k], color=STATUS_COLORS[r.status], alpha=0.4, zorder=2)
    ax.axvline(0.0, color="black", linewidth=1)
    ax.set_yticks(np.arange(len(items)))
    ax.set_yticklabels([_short(label, 40) for _, label, _ in items], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("certified lower bound of the margin (> 0: unsafe set unreachable)")
    ax.set_title("Margin bounds per property")
    ax.grid(True, axis="x", alpha=0.3)
    return Figure("margins", "Dot plot: certified margin lower bounds per property and disjunct", _png(fig))


def image_panels(name: str, panels: Sequence[tuple[str, np.ndarray, str]]) -> Figure:
    """Images side by side.  Each panel: (title, HxW or HxWxC array, "gray" | "diverging").

    Gray panels share one colour range (so the counterexample and the original compare);
    a diverging panel is scaled to its own symmetric range (the perturbation, magnified)."""
    grays = [a for _, a, mode in panels if mode == "gray"]
    lo = min(float(np.min(a)) for a in grays) if grays else 0.0
    hi = max(float(np.max(a)) for a in grays) if grays else 1.0
    if hi <= lo:
        hi = lo + 1.0
    fig, _ = _new_figure(2.6 * len(panels), 2.9)
    fig.clf()
    for k, (title, arr, mode) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        a = np.asarray(arr, dtype=np.float64)
        if mode == "diverging":
            r = float(np.max(np.abs(a))) or 1.0
            im = ax.imshow(a if a.ndim == 2 else a.mean(axis=-1), cmap="RdBu_r", vmin=-r, vmax=r,
                           interpolation="nearest")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        elif a.ndim == 3:
            ax.imshow(np.clip((a - lo) / (hi - lo), 0, 1), interpolation="nearest")
        else:
            ax.imshow(a, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return Figure(name, "Counterexample images: " + ", ".join(t for t, _, _ in panels), _png(fig))
