"""Read result files into typed rows: ``certify check --json`` objects and ``certify suite`` JSON Lines.

A *result file* is either

* one JSON object written by ``certify check --json`` (keys ``model``, ``spec``,
  ``certify_version``, ``status``, ``seconds``, ``engine``, ``reason``, ``counterexample``,
  ``lifted``, ``instances``), or a JSON list of such objects; or
* a JSON Lines file written by ``certify suite`` (one record per line with at least ``onnx``,
  ``vnnlib``, ``timeout``, ``status``, ``seconds``, ``engine``, ``reason``, ``counterexample``).

Each check object or suite record becomes one :class:`ResultRow`.  Relative model/spec paths
are resolved against the result file's folder, then the extra ``search`` folders, then the
current folder; a path that resolves to no file keeps ``model_path``/``spec_path`` None (the
report then shows the name but no hash).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from certify.errors import UsageError

#: The statuses a row may have (``error``: the instance could not be run at all).
STATUSES: tuple[str, ...] = ("holds", "violated", "unknown", "error")

#: Statuses that count as solved in the cactus plot.
SOLVED: frozenset[str] = frozenset({"holds", "violated"})


@dataclass(frozen=True, slots=True, eq=False)
class CounterexampleData:
    """A counterexample as recorded: flat input ``x``, flat output ``y``, replay flag."""

    x: np.ndarray  # [n_in] float64
    y: np.ndarray  # [n_out] float64
    replayed: bool


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """One instance (one canonical problem) of a result; ``margins`` are certified lower bounds
    of each unsafe disjunct's margin (positive = that disjunct is proved unreachable)."""

    name: str
    status: str
    engine: str
    seconds: float
    reason: str = ""
    margins: tuple[float, ...] = ()
    method: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class ResultRow:
    """One property checked on one model: a ``certify check`` result or a ``certify suite`` record.

    ``group`` names the result file it came from (used to compare runs in the plots);
    ``shape`` is the input's shape when the record tells it (the lifted input's nesting or an
    explicit ``input_shape``), else None.
    """

    label: str
    model: str
    spec: str
    status: str
    seconds: float
    engine: str
    reason: str
    group: str
    source: Path
    model_path: Path | None = None
    spec_path: Path | None = None
    certify_version: str | None = None
    timeout: float | None = None
    finished: str | None = None
    counterexample: CounterexampleData | None = None
    lifted: dict[str, Any] | None = None
    instances: tuple[InstanceRow, ...] = ()
    shape: tuple[int, ...] | None = None
    expected: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def solved(self) -> bool:
        return self.status in SOLVED

    @property
    def margins(self) -> tuple[float, ...]:
        """Every certified disjunct margin of every instance of this row."""
        return tuple(m for inst in self.instances for m in inst.margins)


# ----------------------------------------------------------------------------- reading


def load_results(paths: Sequence[str | os.PathLike[str]], search: Sequence[Path] = ()) -> list[ResultRow]:
    """Every row of every result file, in file order.  Raises UsageError on unreadable input."""
    rows: list[ResultRow] = []
    for p in paths:
        rows.extend(load_file(Path(p), search))
    if not rows:
        raise UsageError("no results in " + ", ".join(str(p) for p in paths))
    return rows


def load_file(path: Path, search: Sequence[Path] = ()) -> list[ResultRow]:
    """The rows of one result file (check JSON, a JSON list of them, or suite JSON Lines)."""
    if not path.is_file():
        raise UsageError(f"{path}: no such results file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    objects = _parse(path, text)
    folders = [path.parent, *search, Path.cwd()]
    group = path.stem.removesuffix(".results")
    return [_row(obj, path, group, folders, k) for k, obj in enumerate(objects)]


def _parse(path: Path, text: str) -> list[dict[str, Any]]:
    stripped = text.strip()
    if not stripped:
        raise UsageError(f"{path}: empty results file")
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list) and all(isinstance(d, dict) for d in data):
        return list(data)
    objects: list[dict[str, Any]] = []
    lines = text.splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if all(not rest.strip() for rest in lines[lineno:]):
                break  # a torn last line of a suite still running
            raise UsageError(f"{path}:{lineno}: not JSON (expected check JSON or suite JSON Lines)") from None
        if not isinstance(obj, dict):
            raise UsageError(f"{path}:{lineno}: expected a JSON object")
        objects.append(obj)
    return objects


def _row(obj: dict[str, Any], source: Path, group: str, folders: Sequence[Path], index: int) -> ResultRow:
    where = f"{source}: record {index + 1}"
    if "status" not in obj:
        raise UsageError(f"{where}: no 'status' field (not a certify result)")
    status = str(obj["status"]).lower()
    if status not in STATUSES:
        raise UsageError(f"{where}: unknown status {obj['status']!r}")
    model = str(obj.get("model", obj.get("onnx", "")))
    spec = str(obj.get("spec", obj.get("vnnlib", "")))
    instances = tuple(_instance(i, k) for k, i in enumerate(obj.get("instances") or []) if isinstance(i, dict))
    lifted = obj.get("lifted") if isinstance(obj.get("lifted"), dict) else None
    known = {"model", "onnx", "spec", "vnnlib", "status", "seconds", "engine", "reason", "counterexample",
             "lifted", "instances", "certify_version", "timeout", "finished", "input_shape", "image_shape",
             "expected", "name"}
    return ResultRow(
        label=_label(obj, spec, instances),
        model=model,
        spec=spec,
        status=status,
        seconds=_float(obj.get("seconds"), 0.0),
        engine=str(obj.get("engine") or ""),
        reason=str(obj.get("reason") or ""),
        group=group,
        source=source,
        model_path=_resolve(model, folders),
        spec_path=_resolve(spec, folders),
        certify_version=None if obj.get("certify_version") is None else str(obj["certify_version"]),
        timeout=None if obj.get("timeout") is None else _float(obj["timeout"], 0.0),
        finished=None if obj.get("finished") is None else str(obj["finished"]),
        counterexample=_counterexample(obj.get("counterexample")),
        lifted=lifted,
        instances=instances,
        shape=_shape_hint(obj, lifted),
        expected=None if obj.get("expected") is None else str(obj["expected"]),
        extra={k: v for k, v in obj.items() if k not in known and isinstance(v, (str, int, float, bool))},
    )


def _label(obj: dict[str, Any], spec: str, instances: tuple[InstanceRow, ...]) -> str:
    if obj.get("name"):
        return str(obj["name"])
    if len(instances) == 1 and instances[0].name:
        return instances[0].name
    return Path(spec).stem if spec else "(unnamed)"


def _instance(obj: dict[str, Any], k: int) -> InstanceRow:
    cert = obj.get("certificate") if isinstance(obj.get("certificate"), dict) else {}
    margins = cert.get("disjunct_margins") or obj.get("disjunct_margins") or []
    good = tuple(float(m) for m in margins if isinstance(m, (int, float)) and math.isfinite(float(m)))
    return InstanceRow(name=str(obj.get("name") or f"instance {k}"), status=str(obj.get("status", "unknown")),
                       engine=str(obj.get("engine") or ""), seconds=_float(obj.get("seconds"), 0.0),
                       reason=str(obj.get("reason") or ""), margins=good, method=str(cert.get("method") or ""))


def _counterexample(obj: Any) -> CounterexampleData | None:
    if not isinstance(obj, dict) or obj.get("x") is None:
        return None
    try:
        x = np.asarray(obj["x"], dtype=np.float64).reshape(-1)
        y = np.asarray(obj.get("y") or [], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    return CounterexampleData(x, y, bool(obj.get("replayed", False)))


def _shape_hint(obj: dict[str, Any], lifted: dict[str, Any] | None) -> tuple[int, ...] | None:
    for key in ("image_shape", "input_shape"):
        value = obj.get(key)
        if isinstance(value, list) and value and all(isinstance(v, int) and v > 0 for v in value):
            return tuple(value)
    if lifted is not None:
        for key in ("input", "image", "blurred", "x"):
            if isinstance(lifted.get(key), list):
                try:
                    arr = np.asarray(lifted[key], dtype=np.float64)
                except (TypeError, ValueError):
                    continue
                if arr.ndim >= 1:
                    return tuple(int(s) for s in arr.shape)
    return None


def _float(value: Any, default: float) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def _resolve(name: str, folders: Iterable[Path]) -> Path | None:
    if not name:
        return None
    p = Path(name)
    if p.is_absolute():
        return p if p.is_file() else None
    for folder in folders:
        candidate = folder / p
        if candidate.is_file():
            return candidate
    return None


# ----------------------------------------------------------------------------- versions


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class FileVersion:
    """A model or spec file named by the results: its name, resolved path and hash (None if missing)."""

    role: str  # "model" | "spec"
    name: str
    path: Path | None
    sha256: str | None
    size: int | None


def file_versions(rows: Sequence[ResultRow]) -> list[FileVersion]:
    """One entry per distinct model and spec file, models first, in first-seen order."""
    out: list[FileVersion] = []
    for role in ("model", "spec"):
        seen: set[str] = set()
        for r in rows:
            name = r.model if role == "model" else r.spec
            path = r.model_path if role == "model" else r.spec_path
            key = str(path) if path is not None else name
            if not name or key in seen:
                continue
            seen.add(key)
            digest = sha256_file(path) if path is not None else None
            size = path.stat().st_size if path is not None else None
            out.append(FileVersion(role, name, path, digest, size))
    return out


def read_expected(path: Path) -> dict[tuple[str, str], str]:
    """An ``onnx,vnnlib,expected`` CSV (``sat``/``unsat``/``holds``/``violated``) keyed by file names."""
    import csv

    if not path.is_file():
        raise UsageError(f"{path}: no such expected-results file")
    words = {"unsat": "holds", "holds": "holds", "sat": "violated", "violated": "violated"}
    out: dict[tuple[str, str], str] = {}
    with open(path, newline="") as fh:
        for row in csv.reader(fh):
            if len(row) < 3 or row[2].strip().lower() not in words:
                continue
            out[(Path(row[0].strip()).name, Path(row[1].strip()).name)] = words[row[2].strip().lower()]
    return out
