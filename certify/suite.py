"""Run a whole VNN-COMP instance list: long-lived workers, a crash-safe results file, resume.

An instance list is VNN-COMP's CSV, ``onnx,vnnlib,timeout`` per row (no header; one is
tolerated), paths relative to the CSV's folder.  :func:`run_suite` runs every row in worker
processes that start once (``spawn``) and keep loaded networks cached by path, so no instance
pays for Python or torch start-up.  Each finished instance is appended to a JSON Lines file by
the parent alone, flushed and fsync'ed before the worker gets its next instance; a result is
keyed by ``(onnx, vnnlib, occurrence)`` as written in the CSV (``occurrence`` counts earlier
rows naming the same pair, so duplicates are allowed), which is what ``resume`` skips on.

A worker that dies (SIGKILL, segfault, out of memory) costs only its instance, recorded as
``error``; a worker still busy ``grace`` seconds after its instance's timeout is killed and
the instance recorded as ``unknown`` with reason ``"timeout (worker killed)"``.  Either way a
fresh worker takes its place and the suite goes on.

The parent never imports torch: workers load the solver preset and report ready (or a usage
error, raised here as :class:`~certify.errors.UsageError`) before any instance is sent.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import multiprocessing as mp
import os
import signal
import statistics
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Literal

from certify.errors import CertifyError, UsageError

log = logging.getLogger(__name__)

#: Statuses of a suite record (an instance that could not run at all is an ``error``).
STATUSES: tuple[str, ...] = ("holds", "violated", "unknown", "error")

#: Reason recorded when the hard wall-clock guard kills a worker.
KILLED_REASON = "timeout (worker killed)"

#: Networks each worker keeps loaded (least recently used ones are dropped).
NETWORK_CACHE = 8

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


# ----------------------------------------------------------------------------- results store

#: Fields every record has.  ``seconds`` is measured by the worker from receiving the instance
#: (network and spec loading included) to its verdict.  Records written by this version also carry
#: ``wall_seconds``: measured by the suite's parent from handing the instance to a worker to
#: receiving its record (loading, the pipe, a killed or crashed worker's whole stay; for a
#: ``--fuzz-first`` hit the whole fuzz task of its network), the figure to hold against
#: ``timeout``; ``net_loaded`` (whether the network loaded) where the worker knows it; and on
#: errors ``error_type`` (the exception class, ``internal <class>`` for a bug, ``crash`` for a
#: dead worker) and ``op`` (an unsupported ONNX op).
RECORD_FIELDS: tuple[str, ...] = ("onnx", "vnnlib", "occurrence", "timeout", "status", "seconds",
                                  "engine", "reason", "counterexample")


def record_key(record: dict[str, Any]) -> Key:
    return (str(record["onnx"]), str(record["vnnlib"]), int(record.get("occurrence", 0)))


def _valid_record(obj: Any) -> bool:
    return isinstance(obj, dict) and all(k in obj for k in RECORD_FIELDS) and obj["status"] in STATUSES


class ResultsStore:
    """An append-only JSON Lines file of finished instances; only the suite's parent writes it.

    Opening it reads the records already there.  A torn last line (the writer was killed
    mid-write) is cut off; any other unreadable line is an error naming it.
    """

    def __init__(self, path: Path, records: dict[Key, dict[str, Any]], handle: Any) -> None:
        self.path = path
        self.records = records
        self._handle = handle

    @classmethod
    def open(cls, path: str | os.PathLike[str], resume: bool = False, overwrite: bool = False) -> ResultsStore:
        path = Path(path)
        records: dict[Key, dict[str, Any]] = {}
        if path.exists() and overwrite:
            path.unlink()
        if path.exists():
            records, good_bytes, needs_newline = _read_records(path)
            if records and not resume:
                raise UsageError(f"{path} already holds {len(records)} result(s): pass --resume to continue "
                                 "it, or --overwrite to start again")
            size = path.stat().st_size
            if good_bytes < size or needs_newline:
                with open(path, "r+b") as fh:
                    if good_bytes < size:
                        log.warning("%s: dropping a torn last line (%d bytes)", path, size - good_bytes)
                        fh.truncate(good_bytes)
                    if needs_newline:
                        fh.seek(0, os.SEEK_END)
                        fh.write(b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        handle = open(path, "a", encoding="utf-8")
        if created:
            _fsync_dir(path.parent)
        return cls(path, records, handle)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line, flushed and fsync'ed before returning."""
        self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.records[record_key(record)] = record

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_records(path: Path) -> tuple[dict[Key, dict[str, Any]], int, bool]:
    """Records by key, the byte length of the good prefix, and whether the last record lacks
    its newline.  Only the last non-blank line may be unreadable (torn): it is left out."""
    data = path.read_bytes()
    records: dict[Key, dict[str, Any]] = {}
    chunks = data.split(b"\n")  # every chunk but the last ended with a newline
    good = 0
    for k, raw in enumerate(chunks):
        tail = k == len(chunks) - 1
        if raw.strip():
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                obj = None
            if not _valid_record(obj):
                if all(not rest.strip() for rest in chunks[k + 1:]):
                    return records, good, False  # a torn last line: cut it off
                raise UsageError(f"{path}:{k + 1}: not a suite result record; fix or remove the line")
            records[record_key(obj)] = obj
            if tail:  # a complete record whose newline never made it to disk
                return records, len(data), True
        good += len(raw) + (0 if tail else 1)
    return records, good, False


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


# ----------------------------------------------------------------------------- the worker side


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    solver: str
    engine: str | None
    device: str
    threads: int
    proofs: str = "check"
    certificates: Path | None = None


@dataclass(frozen=True, slots=True)
class Task:
    onnx_path: str
    vnnlib_path: str
    timeout: float


@dataclass(frozen=True, slots=True)
class FuzzTask:
    """Fuzz every (onnx, vnnlib) in ``vnnlibs`` over one network for ``seconds``."""

    onnx_path: str
    vnnlibs: tuple[str, ...]
    seconds: float


def _watch_parent(lifeline: Connection) -> None:
    """End this worker when the suite's parent is gone (killed), even mid-instance: the parent
    holds the only write end of ``lifeline``, so reading it ends in EOF exactly then."""
    try:
        lifeline.recv()
    except (EOFError, OSError):
        pass
    os._exit(3)


def _worker_main(conn: Connection, lifeline: Connection, config: WorkerConfig) -> None:
    """A worker's life: report ready, then run tasks until told to stop or the parent goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    threading.Thread(target=_watch_parent, args=(lifeline,), daemon=True).start()
    try:
        import torch

        from certify.api import CheckOptions, preset_for, resolve_device
        from certify.engines.registry import make_engine

        torch.set_num_threads(config.threads)
        options = CheckOptions(solver=config.solver, engine=config.engine, timeout=1.0,
                               device=resolve_device(config.device), proofs=config.proofs,  # type: ignore[arg-type]
                               certificates=config.certificates)
        for stage in preset_for(options).stages:
            # import every engine now, not inside the first instance's timeout (a fresh
            # worker after a kill would otherwise pay the imports and overrun again)
            make_engine(stage.engine, stage.options)
    except CertifyError as exc:
        conn.send(("fatal", str(exc)))
        return
    conn.send(("ready", os.getpid()))
    cache: OrderedDict[str, Any] = OrderedDict()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            if isinstance(task, FuzzTask):
                reply: Any = ("fuzz", _run_fuzz(task, options, cache))
            else:
                reply = ("result", _run_task(task, options, cache))
        except MemoryError:
            reply = ("result", {**_error_record("out of memory (MemoryError)", 0.0), "error_type": "MemoryError"})
            conn.send(reply)
            return  # this process may be in a bad state: let the parent start a fresh one
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


def _network(path: str, cache: OrderedDict[str, Any]) -> Any:
    """The network of ``path`` (``X.onnx`` or its ``.gz``), from the cache when loaded before."""
    from certify.api import load_model
    from certify.io.files import resolve

    key = os.path.realpath(resolve(path))
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    net = load_model(path)
    cache[key] = net
    while len(cache) > NETWORK_CACHE:
        cache.popitem(last=False)
    return net


def _error_record(reason: str, seconds: float, exc: BaseException | None = None,
                  net_loaded: bool | None = None) -> dict[str, Any]:
    """An ``error`` record; with the exception, its class (``error_type``; ``internal <class>`` for
    a bug, i.e. not a :class:`CertifyError`) and, for an unsupported ONNX op, the op (``op``); with
    ``net_loaded``, whether the network had loaded before the error."""
    record: dict[str, Any] = {"status": "error", "seconds": seconds, "engine": "none", "reason": reason,
                              "counterexample": None}
    if exc is not None:
        kind = type(exc).__name__
        record["error_type"] = kind if isinstance(exc, CertifyError) else f"internal {kind}"
        op = getattr(exc, "op_type", None)
        if isinstance(op, str):
            record["op"] = op
    if net_loaded is not None:
        record["net_loaded"] = net_loaded
    return record


def _run_task(task: Task, options: Any, cache: OrderedDict[str, Any]) -> dict[str, Any]:
    from certify.api import check_instances, load_instances

    start = time.monotonic()
    net = None
    try:
        net = _network(task.onnx_path, cache)
        instances = load_instances(task.onnx_path, task.vnnlib_path, network=net)
        loaded = time.monotonic() - start
        target = options.certificates
        if target is not None:
            stems = (Path(task.onnx_path).name.split(".")[0], Path(task.vnnlib_path).name.split(".")[0])
            target = target / f"{stems[0]}__{stems[1]}.npz"
        result = check_instances(instances, replace(options, timeout=max(0.0, task.timeout - loaded),
                                                    certificates=target))
    except CertifyError as exc:
        return _error_record(str(exc), time.monotonic() - start, exc, net is not None)
    except Exception as exc:  # a bug on this instance: keep the suite going, keep the traceback
        log.exception("internal error on %s %s", task.onnx_path, task.vnnlib_path)
        return _error_record(f"internal error: {type(exc).__name__}: {exc}", time.monotonic() - start, exc,
                             net is not None)
    data = result.to_json()
    opaque = net.is_opaque
    return {"status": data["status"], "seconds": time.monotonic() - start, "load_seconds": loaded,
            "engine": data["engine"], "reason": data["reason"], "net_loaded": not opaque,
            **({"opaque": True} if opaque else {}), **({"proof": data["proof"]} if data.get("proof") else {}),
            "counterexample": _cex_record(data["counterexample"])}


def _cex_record(cex: dict[str, Any] | None) -> dict[str, Any] | None:
    """The counterexample fields a suite record keeps."""
    if cex is None:
        return None
    return {k: cex[k] for k in ("x", "y", "replayed", "precision", "runtime") if k in cex}


def _run_fuzz(task: FuzzTask, options: Any, cache: OrderedDict[str, Any]) -> list[dict[str, Any] | None]:
    """One record (violated, engine "fuzz") or None per vnnlib of the task."""
    import numpy as np

    from certify.api import load_instances
    from certify.budget import Budget
    from certify.fuzz import FuzzOptions, fuzz_instances
    from certify.replay import replay
    from certify.verdict import Status

    start = time.monotonic()
    try:
        net = _network(task.onnx_path, cache)
        groups = [load_instances(task.onnx_path, v, network=net) for v in task.vnnlibs]
        flat = [inst for g in groups for inst in g]
        loaded = time.monotonic() - start
        verdicts = fuzz_instances(flat, Budget.seconds(task.seconds, options.device), FuzzOptions())
    except CertifyError as exc:
        log.warning("fuzz stage skipped for %s: %s", task.onnx_path, exc)
        return [None] * len(task.vnnlibs)
    except Exception:
        log.exception("fuzz stage failed for %s", task.onnx_path)
        return [None] * len(task.vnnlibs)
    out: list[dict[str, Any] | None] = []
    k = 0
    for g in groups:
        found = None
        for inst, v in zip(g, verdicts[k:k + len(g)]):
            if found is None and v.status is Status.VIOLATED and v.counterexample is not None:
                cex = v.counterexample
                checked = cex if cex.replayed else replay(inst.oracle, inst.problem, cex.x)
                if checked is not None:
                    found = (checked, v.seconds)
        k += len(g)
        if found is None:
            out.append(None)
            continue
        cex, secs = found
        out.append({"status": "violated", "seconds": loaded + secs, "load_seconds": loaded, "engine": "fuzz",
                    "reason": "", "net_loaded": True, "counterexample": {
                        "x": np.asarray(cex.x, dtype=np.float64).reshape(-1).tolist(),
                        "y": np.asarray(cex.y, dtype=np.float64).reshape(-1).tolist(),
                        "replayed": True, "precision": cex.precision, "runtime": cex.runtime}})
    return out


# ----------------------------------------------------------------------------- the parent side


@dataclass(eq=False)
class _Worker:
    process: Any
    conn: Connection
    lifeline: Connection  # the write end; closing it (or dying) tells the worker to go
    ready: bool = False
    started: float = field(default_factory=time.monotonic)
    job: Any = None  # (SuiteEntry, timeout) or ("fuzz", [entries]) while busy
    dispatched: float = 0.0
    deadline: float = math.inf

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    @property
    def idle(self) -> bool:
        return self.ready and self.job is None


def _context() -> Any:
    """``forkserver`` where there is one (a fresh worker forks from a server that has already
    imported torch and certify: a restart after a crash costs milliseconds), else ``spawn``.
    Never plain ``fork``: the parent may hold threads and locks."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["certify.suite", "certify.api"])
        return ctx
    return mp.get_context("spawn")


class _Pool:
    """Worker processes, each with its own pipe (a killed worker cannot wedge a shared queue)."""

    def __init__(self, config: WorkerConfig, size: int, start_timeout: float) -> None:
        self.ctx = _context()
        self.config = config
        self.start_timeout = start_timeout
        self.workers: list[_Worker] = [self._start() for _ in range(size)]

    def _start(self) -> _Worker:
        parent_conn, child_conn = self.ctx.Pipe(duplex=True)
        life_r, life_w = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_worker_main, args=(child_conn, life_r, self.config),
                                name="certify-suite-worker", daemon=True)
        proc.start()
        child_conn.close()
        life_r.close()
        return _Worker(proc, parent_conn, life_w)

    def replace(self, worker: _Worker) -> None:
        self.stop(worker, kill=True)
        self.workers[self.workers.index(worker)] = self._start()

    @staticmethod
    def stop(worker: _Worker, kill: bool) -> None:
        if kill and worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=10)
        worker.conn.close()
        worker.lifeline.close()

    def close(self) -> None:
        for w in self.workers:
            if w.process.is_alive() and w.job is None:
                try:
                    w.conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
        for w in self.workers:
            w.process.join(timeout=5 if w.job is None else 0)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=5)
            w.conn.close()
            w.lifeline.close()


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "worker vanished"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory, or killed from outside)" if exitcode == -signal.SIGKILL else ""
        return f"worker crashed: killed by {name}{hint}"
    return f"worker crashed: exited with code {exitcode}"


def _finish(entry: SuiteEntry, timeout: float, outcome: dict[str, Any], pid: int | None) -> dict[str, Any]:
    """The record written for ``entry``: identity fields first, then the outcome."""
    record: dict[str, Any] = {"onnx": entry.onnx, "vnnlib": entry.vnnlib, "occurrence": entry.occurrence,
                              "line": entry.line, "timeout": timeout}
    record.update(outcome)
    for k in ("seconds", "load_seconds", "wall_seconds"):
        if k in record:
            record[k] = round(float(record[k]), 4)
    record["worker"] = pid
    record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return record


def run_suite(entries: Sequence[SuiteEntry], store: ResultsStore, options: SuiteOptions = SuiteOptions(),
              on_event: Callable[[SuiteEvent], None] | None = None) -> SuiteReport:
    """Run every entry not already in ``store``; records are appended as they finish.

    Returns every entry's record (resumed ones included) in list order and the summary.
    """
    begin = time.monotonic()
    emit = on_event or (lambda event: None)
    tally = Tally(len(entries))
    for e in entries:
        if e.key in store.records:
            tally.add(store.records[e.key]["status"])
    pending = deque(e for e in entries if e.key not in store.records)
    ran = 0

    def record(entry: SuiteEntry, timeout: float, outcome: dict[str, Any], pid: int | None) -> None:
        nonlocal ran
        rec = _finish(entry, timeout, outcome, pid)
        store.append(rec)
        tally.add(rec["status"])
        ran += 1
        emit(SuiteEvent("done", tally.copy(), time.monotonic() - begin, entry, rec, pid))

    if pending:
        threads = options.threads or max(1, (os.cpu_count() or 1) // options.workers)
        config = WorkerConfig(options.solver, options.engine, options.device, threads, options.proofs,
                              options.certificates)
        pool = _Pool(config, min(options.workers, len(pending)), options.start_timeout)
        try:
            if options.fuzz_first > 0:
                emit(SuiteEvent("stage", tally.copy(), time.monotonic() - begin,
                                message=f"fuzz-first: {options.fuzz_first:g} s per network"))
                groups: OrderedDict[str, list[SuiteEntry]] = OrderedDict()
                for e in pending:
                    groups.setdefault(str(e.onnx_path), []).append(e)
                jobs: deque[Any] = deque(("fuzz", g) for g in groups.values())
                _drive(pool, jobs, options, record, emit, tally, begin)
                pending = deque(e for e in pending if e.key not in store.records)
                emit(SuiteEvent("stage", tally.copy(), time.monotonic() - begin,
                                message=f"proving the other {len(pending)} instance(s)"))
            _drive(pool, deque(pending), options, record, emit, tally, begin)
        finally:
            pool.close()
    records = tuple(store.records[e.key] for e in entries)
    return SuiteReport(tuple(entries), records, summarize(records, time.monotonic() - begin, ran))


def _drive(pool: _Pool, jobs: deque[Any], options: SuiteOptions,
           record: Callable[[SuiteEntry, float, dict[str, Any], int | None], None],
           emit: Callable[[SuiteEvent], None], tally: Tally, begin: float) -> None:
    """Hand ``jobs`` (entries, or ("fuzz", entries) groups) to idle workers until all are done."""
    last_tick = time.monotonic()
    while jobs or any(w.job is not None for w in pool.workers):
        for w in pool.workers:
            if w.idle and jobs:
                _dispatch(w, jobs.popleft(), options, emit, tally, begin)
        now = time.monotonic()
        deadline = min((w.deadline for w in pool.workers), default=math.inf)
        waiting = [w.conn for w in pool.workers] + [w.process.sentinel for w in pool.workers]
        ready = wait(waiting, timeout=max(0.0, min(1.0, deadline - now)))
        for w in list(pool.workers):
            if w.conn in ready:
                try:
                    msg = w.conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is not None:
                    _receive(pool, w, msg, record)
                    continue
            if w.process.sentinel in ready or not w.process.is_alive():
                _died(pool, w, record)
        now = time.monotonic()
        for w in list(pool.workers):
            if w.job is not None and now >= w.deadline:
                entry_or_group, timeout = w.job
                log.warning("worker %d still busy %.0f s after dispatch: killing it", w.pid, now - w.dispatched)
                pid, elapsed = w.pid, now - w.dispatched
                pool.replace(w)
                if entry_or_group == "fuzz":
                    continue  # fuzzing is best-effort: its instances are proved next
                record(entry_or_group, timeout, {"status": "unknown", "seconds": elapsed, "engine": "none",
                                                 "reason": KILLED_REASON, "counterexample": None,
                                                 "wall_seconds": elapsed}, pid)
            elif w.job is None and not w.ready and now - w.started > pool.start_timeout:
                raise RuntimeError(f"a suite worker did not start within {pool.start_timeout:.0f} s")
        if now - last_tick >= 1.0:
            last_tick = now
            emit(SuiteEvent("tick", tally.copy(), now - begin))


def _dispatch(w: _Worker, job: Any, options: SuiteOptions, emit: Callable[[SuiteEvent], None],
              tally: Tally, begin: float) -> None:
    now = time.monotonic()
    if isinstance(job, tuple) and job[0] == "fuzz":
        group: list[SuiteEntry] = job[1]
        w.conn.send(FuzzTask(str(group[0].onnx_path), tuple(str(e.vnnlib_path) for e in group),
                             options.fuzz_first))
        w.job = ("fuzz", [(e, options.timeout_for(e)) for e in group])
        # loading every spec of the network counts here too: be generous before killing
        w.deadline = now + options.fuzz_first + options.grace_for(options.fuzz_first) + 60.0
    else:
        entry: SuiteEntry = job
        timeout = options.timeout_for(entry)
        w.conn.send(Task(str(entry.onnx_path), str(entry.vnnlib_path), timeout))
        w.job = (entry, timeout)
        w.deadline = now + timeout + options.grace_for(timeout)
        emit(SuiteEvent("start", tally.copy(), now - begin, entry, pid=w.pid))
    w.dispatched = now


def _receive(pool: _Pool, w: _Worker, msg: Any,
             record: Callable[[SuiteEntry, float, dict[str, Any], int | None], None]) -> None:
    kind, payload = msg
    if kind == "ready":
        w.ready = True
        return
    if kind == "fatal":
        raise UsageError(str(payload))
    job, w.job, w.deadline = w.job, None, math.inf
    if job is None:
        log.error("BUG: worker %d sent a %s message while idle", w.pid, kind)
        return
    wall = time.monotonic() - w.dispatched
    if kind == "fuzz":
        for (entry, timeout), rec in zip(job[1], payload):
            if rec is not None:
                record(entry, timeout, {**rec, "wall_seconds": wall}, w.pid)
        return
    entry, timeout = job
    record(entry, timeout, {**payload, "wall_seconds": wall}, w.pid)


def _died(pool: _Pool, w: _Worker, record: Callable[[SuiteEntry, float, dict[str, Any], int | None], None]) -> None:
    w.process.join(timeout=5)
    code = w.process.exitcode
    pid, job = w.pid, w.job
    if not w.ready and job is None:
        raise RuntimeError(f"a suite worker failed to start ({_exit_reason(code)}); rerun with -v for details")
    log.warning("worker %d died: %s", pid, _exit_reason(code))
    pool.replace(w)
    if job is None or job[0] == "fuzz":
        return
    entry, timeout = job
    elapsed = time.monotonic() - w.dispatched
    record(entry, timeout, {**_error_record(_exit_reason(code), elapsed), "error_type": "crash",
                            "wall_seconds": elapsed}, pid)
