"""VNN-COMP instance lists: ``onnx,vnnlib,timeout`` rows, paths relative to the CSV."""


from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from certify.errors import UsageError

log = logging.getLogger(__name__)

Key = tuple[str, str, int]

# ----------------------------------------------------------------------------- instance lists


@dataclass(frozen=True, slots=True)
class SuiteEntry:
    """One row of an instance list.

    ``onnx``/``vnnlib`` are the paths as written in the CSV; ``onnx_path``/``vnnlib_path``
    resolved against the CSV's folder (and to the ``.gz`` beside a missing name, as VNN-COMP
    ships its files: see :func:`certify.io.files.resolve`).  ``line`` is the 1-based CSV line,
    ``index`` the 0-based data row and ``occurrence`` the number of earlier rows naming the same
    (onnx, vnnlib).
    """

    onnx: str
    vnnlib: str
    timeout: float
    line: int
    index: int
    occurrence: int
    onnx_path: Path
    vnnlib_path: Path

    @property
    def key(self) -> Key:
        return (self.onnx, self.vnnlib, self.occurrence)

    @property
    def label(self) -> str:
        return f"{Path(self.onnx).name} {Path(self.vnnlib).name}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_instances(csv_path: str | os.PathLike[str], check_files: bool = True) -> list[SuiteEntry]:
    """The rows of a VNN-COMP instance list; bad input raises UsageError naming the line.

    Blank lines and lines starting with ``#`` are skipped; a first row whose third field is
    not a number is taken as a header.  A file named ``X.onnx`` that exists only as
    ``X.onnx.gz`` is read from the ``.gz`` (likewise ``.vnnlib``).
    """
    from certify.io.files import resolve

    path = Path(csv_path)
    if not path.is_file():
        raise UsageError(f"{path}: no such instance list")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    base = path.parent
    entries: list[SuiteEntry] = []
    seen: dict[tuple[str, str], int] = {}
    first = True
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        fields = [f.strip() for f in row]
        if not any(fields) or fields[0].startswith("#"):
            continue
        if first and len(fields) >= 3 and not _is_number(fields[2]):
            first = False
            continue  # a header such as "onnx,vnnlib,timeout"
        first = False
        if len(fields) != 3 or not fields[0] or not fields[1]:
            raise UsageError(f"{path}:{lineno}: expected 'onnx,vnnlib,timeout', got {','.join(row)!r}")
        onnx, vnnlib, timeout_text = fields
        try:
            timeout = float(timeout_text)
        except ValueError:
            raise UsageError(f"{path}:{lineno}: timeout {timeout_text!r} is not a number") from None
        if not (timeout > 0 and math.isfinite(timeout)):
            raise UsageError(f"{path}:{lineno}: timeout must be a positive number, got {timeout_text!r}")
        onnx_path, vnnlib_path = resolve(base / onnx), resolve(base / vnnlib)
        if check_files:
            for what, p in (("onnx", onnx_path), ("vnnlib", vnnlib_path)):
                if not p.is_file():
                    raise UsageError(f"{path}:{lineno}: {what} file {p} not found (nor {p.name}.gz)")
        occurrence = seen.get((onnx, vnnlib), 0)
        seen[(onnx, vnnlib)] = occurrence + 1
        entries.append(SuiteEntry(onnx, vnnlib, timeout, lineno, len(entries), occurrence, onnx_path, vnnlib_path))
    if not entries:
        raise UsageError(f"{path}: no instances")
    return entries
