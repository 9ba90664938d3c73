"""Suite options, progress events and the final table (and VNN-COMP's results CSV)."""


from __future__ import annotations

import csv
import logging
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from certify.errors import UsageError
from certify.suite.instances import SuiteEntry
from certify.suite.store import STATUSES

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- options, events


@dataclass(frozen=True, slots=True)
class SuiteOptions:
    """How to run a suite.

    ``timeout`` overrides every row's timeout; otherwise a row's timeout times
    ``timeout_scale``.  ``grace``: seconds past the timeout before a worker is killed
    (None: 10 s + 10 % of the timeout).  ``threads``: torch threads per worker (None: the CPU
    count divided by ``workers``).  ``fuzz_first``: seconds of batched fuzzing per network
    before the proofs (0: off).  ``proofs``: as ``certify check --proofs``; ``certificates``:
    a folder for every HOLDS's certificate (``<onnx stem>__<vnnlib stem>.npz``).
    """

    solver: str = "default"
    engine: str | None = None
    device: str = "auto"
    proofs: str = "check"
    certificates: Path | None = None
    workers: int = 1
    timeout: float | None = None
    timeout_scale: float = 1.0
    grace: float | None = None
    threads: int | None = None
    fuzz_first: float = 0.0
    start_timeout: float = 300.0  # seconds a new worker may take to import and report ready

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UsageError("--workers must be at least 1")
        if self.timeout is not None and not self.timeout > 0:
            raise UsageError("--timeout must be positive")
        if not self.timeout_scale > 0:
            raise UsageError("--timeout-scale must be positive")
        if self.fuzz_first < 0:
            raise UsageError("--fuzz-first must be >= 0")
        if self.grace is not None and self.grace < 0:
            raise UsageError("--grace must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise UsageError("--threads must be at least 1")

    def timeout_for(self, entry: SuiteEntry) -> float:
        return self.timeout if self.timeout is not None else entry.timeout * self.timeout_scale

    def grace_for(self, timeout: float) -> float:
        return self.grace if self.grace is not None else 10.0 + 0.1 * timeout


@dataclass(slots=True)
class Tally:
    """Counts so far (of the instances in the list, resumed ones included)."""

    total: int
    holds: int = 0
    violated: int = 0
    unknown: int = 0
    error: int = 0

    @property
    def done(self) -> int:
        return self.holds + self.violated + self.unknown + self.error

    def copy(self) -> Tally:
        return replace(self)

    def add(self, status: str) -> None:
        setattr(self, status, getattr(self, status) + 1)


@dataclass(frozen=True, slots=True)
class SuiteEvent:
    """What the runner tells its caller: an instance ``start``ed on worker ``pid``, was
    ``done`` (with its ``record``), a ``stage`` began (``message``), or a ``tick`` passed."""

    kind: Literal["start", "done", "stage", "tick"]
    tally: Tally
    elapsed: float
    entry: SuiteEntry | None = None
    record: dict[str, Any] | None = None
    pid: int | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class Summary:
    holds: int
    violated: int
    unknown: int
    error: int
    total_seconds: float
    median_seconds: float
    wall_seconds: float
    ran: int  # instances run now (the rest came from an earlier run)

    @property
    def count(self) -> int:
        return self.holds + self.violated + self.unknown + self.error


@dataclass(frozen=True, slots=True)
class SuiteReport:
    entries: tuple[SuiteEntry, ...]
    records: tuple[dict[str, Any], ...]  # in instance-list order
    summary: Summary


def summarize(records: Sequence[dict[str, Any]], wall_seconds: float, ran: int) -> Summary:
    counts = {s: sum(1 for r in records if r["status"] == s) for s in STATUSES}
    secs = [float(r["seconds"]) for r in records]
    return Summary(counts["holds"], counts["violated"], counts["unknown"], counts["error"],
                   sum(secs), statistics.median(secs) if secs else 0.0, wall_seconds, ran)


def format_summary(summary: Summary) -> str:
    """The final table, as plain text."""
    rows = [("holds", summary.holds), ("violated", summary.violated), ("unknown", summary.unknown),
            ("errors", summary.error)]
    lines = [f"{'result':<10} {'count':>6}", f"{'-' * 10} {'-' * 6}"]
    lines += [f"{name:<10} {n:>6}" for name, n in rows]
    lines.append(f"{'total':<10} {summary.count:>6}")
    lines.append(f"time: total {summary.total_seconds:.1f} s, median {summary.median_seconds:.2f} s per instance; "
                 f"wall {summary.wall_seconds:.1f} s ({summary.ran} run now, "
                 f"{summary.count - summary.ran} from an earlier run)")
    return "\n".join(lines)


def vnncomp_result(record: dict[str, Any]) -> str:
    """The VNN-COMP 2021 word: holds, violated, timeout, error or unknown."""
    status = record["status"]
    if status == "unknown" and ("timeout" in str(record.get("reason", "")).lower()
                                or float(record["seconds"]) >= 0.99 * float(record["timeout"])):
        return "timeout"
    return str(status)


def write_vnncomp_csv(records: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Rows ``onnx,vnnlib,result,time`` (no header), VNN-COMP 2021 result words."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        for r in records:
            w.writerow([r["onnx"], r["vnnlib"], vnncomp_result(r), f"{float(r['seconds']):.4f}"])
