"""Problem -> VNN-LIB 1.0 text (the inverse of :mod:`certify.io.vnnlib` on one case).

The file declares ``X_0 .. X_{n-1}`` (the problem's flattened box, row-major) and
``Y_0 .. Y_{m-1}``, asserts the box, and asserts the unsafe set: one ``(and ...)`` of rows per
disjunct, joined by ``(or ...)``.  Like every VNN-LIB file, it is *violated* iff some
assignment satisfies all asserts.  Numbers are written with ``repr`` (exact round trip).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from certify.problem import HalfSpaces, Problem

__all__ = ["problem_to_vnnlib", "write_vnnlib"]


def _num(v: float) -> str:
    text = repr(float(v))
    return text if ("." in text or "e" in text or "inf" in text or "nan" in text) else text + ".0"


def _row(a: np.ndarray, b: float) -> str:
    """``sum_j a_j Y_j <= b`` as an S-expression."""
    nz = np.flatnonzero(a)
    if len(nz) == 2 and a[nz[0]] == -a[nz[1]] and abs(a[nz[0]]) == 1.0 and b == 0.0:
        i, j = (nz[0], nz[1]) if a[nz[0]] > 0 else (nz[1], nz[0])
        return f"(<= Y_{i} Y_{j})"
    terms = [f"Y_{j}" if a[j] == 1.0 else f"(* {_num(a[j])} Y_{j})" for j in nz]
    if not terms:
        lhs = "0.0"
    elif len(terms) == 1:
        lhs = terms[0]
    else:
        lhs = f"(+ {' '.join(terms)})"
    return f"(<= {lhs} {_num(b)})"


def _conjunction(hs: HalfSpaces) -> str:
    rows = [_row(a, float(b)) for a, b in zip(hs.A, hs.b)]
    return rows[0] if len(rows) == 1 else f"(and {' '.join(rows)})"


def problem_to_vnnlib(problem: Problem, comment: str = "") -> str:
    """The VNN-LIB text of ``problem`` (inputs: the box, flattened; outputs: the network's)."""
    lo, hi = problem.box.lower.reshape(-1), problem.box.upper.reshape(-1)
    n_out = problem.network.output_size
    lines = [f"; {line}" for line in comment.splitlines()] if comment else []
    lines += [f"(declare-const X_{i} Real)" for i in range(lo.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i in range(lo.size):
        lines.append(f"(assert (>= X_{i} {_num(lo[i])}))")
        lines.append(f"(assert (<= X_{i} {_num(hi[i])}))")
    disjuncts = [_conjunction(hs) for hs in problem.unsafe]
    if len(disjuncts) == 1:
        lines.append(f"(assert {disjuncts[0]})")
    else:
        lines.append("(assert (or")
        lines += [f"    {d if d.startswith('(and') else f'(and {d})'}" for d in disjuncts]
        lines.append("))")
    return "\n".join(lines) + "\n"


def write_vnnlib(problem: Problem, path: str | os.PathLike[str], comment: str = "") -> Path:
    """Write :func:`problem_to_vnnlib` of ``problem`` to ``path``; returns the path."""
    path = Path(path)
    path.write_text(problem_to_vnnlib(problem, comment), encoding="utf-8")
    return path
