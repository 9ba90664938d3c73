"""``certify suite INSTANCES.csv``: run a VNN-COMP instance list, crash-safe and resumable."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from certify.commands.common import Exit, add_device_option, add_proof_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "suite", help="run a VNN-COMP instance list (onnx,vnnlib,timeout) in worker processes",
        description="Run every row of a VNN-COMP instance list (onnx,vnnlib,timeout; paths relative to the "
                    "CSV's folder; X.onnx / Y.vnnlib stored only as X.onnx.gz / Y.vnnlib.gz are read from the "
                    ".gz) with its own timeout in long-lived worker processes. Each finished instance "
                    "is appended to a JSON Lines results file at once; --resume skips the ones already there. "
                    "Exit code: 0 when the suite ran (whatever the verdicts), 2 on bad input.")
    p.add_argument("instances", type=Path, help="instance list: onnx,vnnlib,timeout per row")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--results", type=Path, default=None, metavar="PATH.jsonl",
                   help="JSON Lines results file (default: INSTANCES_STEM.results.jsonl in the current folder)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="skip instances already in the results file")
    mode.add_argument("--overwrite", action="store_true", help="discard an existing results file")
    p.add_argument("--solver", default="default", help="preset name from solvers/ or a preset YAML file")
    p.add_argument("--engine", default=None, help="run only this engine (see `certify engines`)")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--timeout", type=float, default=None, metavar="S", help="use this timeout for every instance")
    t.add_argument("--timeout-scale", type=float, default=1.0, metavar="F",
                   help="multiply each row's timeout by F (default 1)")
    p.add_argument("--grace", type=float, default=None, metavar="S",
                   help="kill a worker this long after its instance's timeout (default 10 s + 10%% of the timeout)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: CPUs / workers)")
    p.add_argument("--vnncomp-csv", type=Path, default=None, metavar="PATH",
                   help="also write VNN-COMP 2021 results: onnx,vnnlib,result,time rows "
                        "(result: holds, violated, timeout, error or unknown)")
    p.add_argument("--fuzz-first", type=float, default=0.0, metavar="S",
                   help="first fuzz all instances of each network in one batch for S seconds per network, "
                        "recording violations at once; then prove the rest (default 0: off)")
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    add_proof_options(p)
    p.add_argument("--certificates", type=Path, default=None, metavar="DIR",
                   help="write every HOLDS's proof certificate into DIR (<onnx stem>__<vnnlib stem>.npz)")
    add_device_option(p)
    p.set_defaults(func=run)


class Progress:
    """Counts so far on stderr: one updating line on a terminal, a line per instance otherwise."""

    def __init__(self, out: TextIO, enabled: bool = True) -> None:
        self.out = out
        self.enabled = enabled
        self.tty = out.isatty()
        self.width = 0

    def __call__(self, event: object) -> None:
        from certify.suite import SuiteEvent

        assert isinstance(event, SuiteEvent)
        if not self.enabled:
            return
        t = event.tally
        counts = (f"[{t.done}/{t.total}] holds {t.holds}  violated {t.violated}  unknown {t.unknown}  "
                  f"errors {t.error}  {_clock(event.elapsed)}")
        if event.kind == "stage":
            self._line(f"-- {event.message}")
        elif self.tty and event.kind in ("done", "tick", "start"):
            current = f"  {event.entry.label}" if event.kind == "start" and event.entry else ""
            self._status(counts + current)
        elif event.kind == "done" and event.record is not None and event.entry is not None:
            r = event.record
            self._line(f"{counts}  {r['status']:<8} {float(r['seconds']):7.2f} s  {event.entry.label}")

    def _status(self, text: str) -> None:
        pad = max(0, self.width - len(text))
        self.out.write("\r" + text + " " * pad)
        self.out.flush()
        self.width = len(text)

    def _line(self, text: str) -> None:
        if self.tty and self.width:
            self.out.write("\r" + " " * self.width + "\r")
            self.width = 0
        self.out.write(text + "\n")
        self.out.flush()

    def end(self) -> None:
        if self.enabled and self.tty and self.width:
            self.out.write("\n")
            self.out.flush()
            self.width = 0


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


def run(args: argparse.Namespace) -> int:
    from certify.suite import (
        ResultsStore,
        SuiteOptions,
        format_summary,
        read_instances,
        run_suite,
        write_vnncomp_csv,
    )

    if args.certificates is not None:
        args.certificates.mkdir(parents=True, exist_ok=True)
    options = SuiteOptions(solver=args.solver, engine=args.engine, device=args.device, workers=args.workers,
                           timeout=args.timeout, timeout_scale=args.timeout_scale, grace=args.grace,
                           threads=args.threads, fuzz_first=args.fuzz_first, proofs=args.proofs,
                           certificates=args.certificates)
    entries = read_instances(args.instances)
    results = args.results or Path(f"{args.instances.stem}.results.jsonl")
    progress = Progress(sys.stderr, enabled=not args.no_progress)
    with ResultsStore.open(results, resume=args.resume, overwrite=args.overwrite) as store:
        done_before = sum(1 for e in entries if e.key in store.records)
        sys.stderr.write(f"certify suite: {len(entries)} instances from {args.instances}, {done_before} already in "
                         f"{results}; {args.workers} worker(s)\n")
        try:
            report = run_suite(entries, store, options, progress)
        finally:
            progress.end()
    sys.stdout.write(format_summary(report.summary) + "\n")
    sys.stdout.write(f"results: {results}\n")
    if args.vnncomp_csv:
        write_vnncomp_csv(report.records, args.vnncomp_csv)
        sys.stdout.write(f"VNN-COMP results CSV: {args.vnncomp_csv}\n")
    return int(Exit.HOLDS)
