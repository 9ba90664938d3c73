"""The parent side: the worker pool, deadlines and kills, and :func:`run_suite`."""


from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import signal
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from multiprocessing.connection import Connection, wait
from typing import Any

from certify.errors import UsageError
from certify.suite.instances import SuiteEntry
from certify.suite.store import ResultsStore
from certify.suite.summary import SuiteEvent, SuiteOptions, SuiteReport, Tally, summarize
from certify.suite.worker import FuzzTask, Task, WorkerConfig, error_record, worker_main

log = logging.getLogger(__name__)

#: Reason recorded when the hard wall-clock guard kills a worker.
KILLED_REASON = "timeout (worker killed)"

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
        proc = self.ctx.Process(target=worker_main, args=(child_conn, life_r, self.config),
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
    record(entry, timeout, {**error_record(_exit_reason(code), elapsed), "error_type": "crash",
                            "wall_seconds": elapsed}, pid)
