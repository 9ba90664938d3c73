"""Run a whole corpus of VNN-COMP benchmarks (a sample of each) and score it in one table.

Usage::

    python benchmarks/corpus.py DIR... [--sample N] [--cap S] [--workers W] [--out DIR]
        [--solver P] [--resume] [--seed K] [--anchors CSV]

Every folder under the given roots that holds an ``instances.csv`` is a benchmark, in the
competition's layout: ``instances.csv`` rows ``onnx/X.onnx,vnnlib/Y.vnnlib,timeout`` (no header),
the files possibly stored only gzipped beside those names (read in memory, never unpacked), and
``expected.csv`` (``onnx,vnnlib,expected`` with ``sat`` = violated, ``unsat`` = holds, header
optional).  Of each benchmark a deterministic sample of ``--sample`` rows is run (the rows
shuffled by ``random.Random(seed)``, then the first N; all rows without ``--sample``) through
:func:`certify.suite.run_suite` (long-lived workers, results appended as they finish), each with
the timeout ``min(its instances.csv timeout, --cap)``.

Writes, under ``--out`` (default ``out/corpus``): ``<benchmark>.results.jsonl`` (the suite's
records; ``--resume`` continues them) and ``summary.md``, one markdown table (also printed): per
benchmark the instances run, the networks that loaded of those used, holds / violated / unknown,
errors grouped by reason (``3 UnsupportedOp Sign``), **wrong** answers (contradicting
expected.csv), answered / known-answer instances, the total time, the worst timeout overrun, and
the best 2024 tool's answered count from ``anchors.csv`` (``benchmark,tool,rows,sat,unsat,timeout``,
found next to the benchmark folders or given by ``--anchors``).

Any answer that contradicts expected.csv is printed loudly on stderr and makes the exit code 1
(2 when a benchmark could not run at all, 0 otherwise).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_vnncomp import EXPECTED_STATUS, judge, read_expected  # noqa: E402

from certify.commands.suite import Progress  # noqa: E402
from certify.errors import CertifyError  # noqa: E402
from certify.suite import ResultsStore, SuiteEntry, SuiteOptions, read_instances, run_suite  # noqa: E402

#: The instance list (and marker) of a benchmark folder.
INSTANCES = "instances.csv"
#: Where the 2024 tools' counts live (searched from the benchmark folder upwards).
ANCHORS = "anchors.csv"


@dataclass(frozen=True, slots=True)
class Anchor:
    """The best 2024 tool on a benchmark: ``answered`` = its sat + unsat, of ``rows`` instances."""

    tool: str
    answered: int
    rows: int


@dataclass(frozen=True, slots=True)
class Row:
    """One benchmark's line of the table (see :func:`score`)."""

    name: str
    run: int
    listed: int
    nets_loaded: int
    nets_used: int
    holds: int
    violated: int
    unknown: int
    errors: tuple[tuple[str, int], ...]  # (reason, count), most frequent first
    wrong: tuple[str, ...]
    answered: int
    known: int
    seconds: float
    worst_overrun: float  # max over instances of wall seconds - timeout (-inf: none ran)
    anchor: Anchor | None

    @property
    def error_count(self) -> int:
        return sum(n for _, n in self.errors)


# ----------------------------------------------------------------------------- inputs


def find_benchmarks(roots: Sequence[Path]) -> list[Path]:
    """Every folder under ``roots`` (a root itself included) that holds an ``instances.csv``."""
    found: list[Path] = []
    for root in roots:
        folders = [root] if (root / INSTANCES).is_file() else sorted(p.parent for p in root.rglob(INSTANCES))
        found += [f for f in folders if f not in found]
    return found


def sample(entries: Sequence[SuiteEntry], n: int | None, seed: int = 0) -> list[SuiteEntry]:
    """``n`` rows chosen by a fixed-seed shuffle (the first ``n`` of it), in list order; every row
    when ``n`` is None.  The same list, ``n`` and seed always give the same rows."""
    rows = list(entries)
    if n is None or n >= len(rows):
        return rows
    random.Random(seed).shuffle(rows)
    return sorted(rows[:n], key=lambda e: e.index)


def cap_timeouts(entries: Sequence[SuiteEntry], cap: float | None) -> list[SuiteEntry]:
    """Each entry with timeout ``min(its own, cap)``."""
    return [e if cap is None or e.timeout <= cap else replace(e, timeout=cap) for e in entries]


def read_anchors(path: Path) -> dict[str, Anchor]:
    """The best tool per benchmark of an ``anchors.csv`` (most sat + unsat; the first on ties)."""
    best: dict[str, Anchor] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            answered = int(row["sat"]) + int(row["unsat"])
            name = row["benchmark"].strip()
            if name not in best or answered > best[name].answered:
                best[name] = Anchor(row["tool"].strip(), answered, int(row["rows"]))
    return best


def anchors_for(bench: Path, explicit: Path | None) -> dict[str, Anchor]:
    """The anchors of ``bench``: ``explicit`` if given, else the nearest ``anchors.csv`` in the
    benchmark's folder or above it."""
    if explicit is not None:
        return read_anchors(explicit)
    for folder in (bench, *bench.resolve().parents):
        if (folder / ANCHORS).is_file():
            return read_anchors(folder / ANCHORS)
    return {}


# ----------------------------------------------------------------------------- scoring


def error_reason(record: dict[str, Any]) -> str:
    """A short reason for an ``error`` record: ``UnsupportedOp Sign``, ``ModelError``, ``crash``...
    (records from before ``error_type`` existed: the reason's first words)."""
    kind = record.get("error_type")
    if kind is None:
        return " ".join(str(record.get("reason", "")).split()[:4]) or "error"
    return f"{kind} {record['op']}" if record.get("op") else str(kind)


def net_loaded(record: dict[str, Any]) -> bool:
    """Whether the record shows that its network loaded."""
    return bool(record.get("net_loaded", record["status"] in ("holds", "violated")))


def wall_seconds(record: dict[str, Any]) -> float:
    """The suite parent's wall time of the instance (the worker's own measure for old records)."""
    return float(record.get("wall_seconds", record["seconds"]))


def score(name: str, records: Sequence[dict[str, Any]], listed: int, expected: dict[tuple[str, str], str],
          anchor: Anchor | None) -> Row:
    """The table row of one benchmark's records."""
    counts = Counter(r["status"] for r in records)
    errors = Counter(error_reason(r) for r in records if r["status"] == "error")
    nets = {r["onnx"] for r in records}
    loaded = {r["onnx"] for r in records if net_loaded(r)}
    wrong: list[str] = []
    answered = known = 0
    for r in records:
        exp = expected.get((r["onnx"], r["vnnlib"]))
        known += exp in EXPECTED_STATUS
        verdict = judge(r, exp)
        answered += verdict != "-"
        if verdict == "WRONG":
            wrong.append(f"{name}: {r['onnx']} {r['vnnlib']}: certify says {r['status']} ({r['engine']}), "
                         f"expected.csv says {exp}")
    overruns = [wall_seconds(r) - float(r["timeout"]) for r in records]
    return Row(name, len(records), listed, len(loaded), len(nets), counts["holds"], counts["violated"],
               counts["unknown"], tuple(errors.most_common()), tuple(wrong), answered, known,
               sum(wall_seconds(r) for r in records), max(overruns, default=-math.inf), anchor)


def total(rows: Sequence[Row]) -> Row:
    """The total row: sums, the worst overrun of all, the sum of the per-benchmark bests."""
    errors: Counter[str] = Counter()
    for r in rows:
        errors.update(dict(r.errors))
    anchors = [r.anchor for r in rows if r.anchor is not None]
    anchor = Anchor("per-benchmark best", sum(a.answered for a in anchors), sum(a.rows for a in anchors)) \
        if anchors else None
    return Row("**total**", sum(r.run for r in rows), sum(r.listed for r in rows),
               sum(r.nets_loaded for r in rows), sum(r.nets_used for r in rows), sum(r.holds for r in rows),
               sum(r.violated for r in rows), sum(r.unknown for r in rows), tuple(errors.most_common()),
               tuple(w for r in rows for w in r.wrong), sum(r.answered for r in rows), sum(r.known for r in rows),
               sum(r.seconds for r in rows), max((r.worst_overrun for r in rows), default=-math.inf), anchor)


# ----------------------------------------------------------------------------- the table

HEADER = ("| benchmark | instances run | nets loaded / used | holds | violated | unknown | errors | wrong "
          "| answered / known | total time (s) | worst overrun (s) | best 2024 tool |")
RULE = "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"


def _errors_cell(row: Row) -> str:
    if not row.errors:
        return "0"
    return f"{row.error_count}: " + ", ".join(f"{n} {reason}" for reason, n in row.errors)


def _anchor_cell(anchor: Anchor | None) -> str:
    if anchor is None:
        return "-"
    return f"{anchor.answered} of {anchor.rows} ({anchor.tool})"


def table_line(row: Row) -> str:
    wrong = f"**{len(row.wrong)}**" if row.wrong else "0"
    overrun = "-" if row.worst_overrun == -math.inf else f"{row.worst_overrun:+.1f}"
    return (f"| {row.name} | {row.run} of {row.listed} | {row.nets_loaded} / {row.nets_used} | {row.holds} | "
            f"{row.violated} | {row.unknown} | {_errors_cell(row)} | {wrong} | {row.answered} / {row.known} | "
            f"{row.seconds:.1f} | {overrun} | {_anchor_cell(row.anchor)} |")


def markdown(rows: Sequence[Row], settings: str, wall: float) -> str:
    lines = ["## VNN-COMP corpus", "", settings, "", HEADER, RULE]
    lines += [table_line(r) for r in rows]
    if len(rows) > 1:
        lines.append(table_line(total(rows)))
    lines += ["",
              f"Wall time of the whole run: {wall:.1f} s.  Time and overrun are the suite's wall seconds per "
              "instance, measured by its parent process from handing the instance to a worker to receiving its "
              "record (network and spec loading, the solve and the pipe included; a killed worker's instance "
              "counts until the kill); \"worst overrun\" is the largest of wall seconds minus that instance's "
              "timeout (negative: every instance ended before its timeout).  \"answered / known\": holds + "
              "violated among the instances whose expected.csv answer is sat or unsat, of those instances.  "
              "\"wrong\" counts answers that contradict expected.csv (must be 0).  The best 2024 tool's count is "
              "over the competition's full benchmark (its rows), with the competition's timeouts and GPUs."]
    lines += [f"- **WRONG** {w}" for r in rows for w in r.wrong]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- running


def results_name(bench: Path, taken: set[str]) -> str:
    """A file stem for ``bench`` not used by an earlier benchmark of this run."""
    name, k = bench.name, 2
    while name in taken:
        name, k = f"{bench.name}-{k}", k + 1
    taken.add(name)
    return name


def run_benchmark(bench: Path, name: str, args: argparse.Namespace, options: SuiteOptions) -> Row:
    """Run the sample of one benchmark and score it."""
    listed = read_instances(bench / INSTANCES, check_files=False)  # missing files become error records
    entries = cap_timeouts(sample(listed, args.sample, args.seed), args.cap)
    results = args.out / f"{name}.results.jsonl"
    sys.stderr.write(f"== {bench}: {len(entries)} of {len(listed)} instances, results in {results}\n")
    with ResultsStore.open(results, resume=args.resume, overwrite=not args.resume) as store:
        progress = Progress(sys.stderr)
        try:
            report = run_suite(entries, store, options, progress)
        finally:
            progress.end()
    anchor = anchors_for(bench, args.anchors).get(bench.name)
    return score(name, report.records, len(listed), read_expected(bench / "expected.csv"), anchor)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("roots", type=Path, nargs="+", metavar="DIR",
                    help="benchmark folders, or folders holding them (any folder with an instances.csv)")
    ap.add_argument("--sample", type=int, default=None, metavar="N", help="instances per benchmark (default: all)")
    ap.add_argument("--cap", type=float, default=None, metavar="S",
                    help="per-instance timeout at most S seconds (default: the instances.csv timeout)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("out") / "corpus", help="output folder (default out/corpus)")
    ap.add_argument("--solver", default="default", help="preset name or preset YAML file")
    ap.add_argument("--resume", action="store_true", help="continue the results files already in --out")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sample's shuffle (default 0)")
    ap.add_argument("--anchors", type=Path, default=None, metavar="CSV",
                    help="the 2024 tools' counts (default: the nearest anchors.csv above each benchmark)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args(argv)
    if args.sample is not None and args.sample < 1:
        ap.error("--sample must be at least 1")
    if args.cap is not None and not args.cap > 0:
        ap.error("--cap must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    benches = find_benchmarks(args.roots)
    if not benches:
        sys.stderr.write(f"corpus: no folder with an {INSTANCES} under {', '.join(map(str, args.roots))}\n")
        return 2
    try:
        options = SuiteOptions(solver=args.solver, device=args.device, workers=args.workers)
    except CertifyError as exc:
        sys.stderr.write(f"corpus: error: {exc}\n")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    rows: list[Row] = []
    failed: list[str] = []
    taken: set[str] = set()
    for bench in benches:
        try:
            rows.append(run_benchmark(bench, results_name(bench, taken), args, options))
        except CertifyError as exc:
            failed.append(f"{bench}: {exc}")
            sys.stderr.write(f"corpus: {bench}: error: {exc}\n")
    settings = (f"certify suite, solver `{args.solver}`, {args.workers} worker(s), "
                f"{'sample %d' % args.sample if args.sample else 'every instance'} per benchmark "
                f"(seed {args.seed}), timeout min(instances.csv, {'%g s' % args.cap if args.cap else 'no cap'}); "
                f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    md = markdown(rows, settings, time.monotonic() - start)
    md += "".join(f"- benchmark not run: {f}\n" for f in failed)
    (args.out / "summary.md").write_text(md)
    (args.out / "summary.json").write_text(json.dumps([_row_json(r) for r in rows], indent=1) + "\n")
    sys.stdout.write("\n" + md)
    sys.stdout.write(f"\nfiles: {args.out}/summary.md, {args.out}/*.results.jsonl\n")
    wrong = [w for r in rows for w in r.wrong]
    if wrong:
        bar = "!" * 78
        sys.stderr.write(f"\n{bar}\n!!! {len(wrong)} VERDICT(S) CONTRADICT expected.csv:\n")
        sys.stderr.writelines(f"!!!   {w}\n" for w in wrong)
        sys.stderr.write(f"{bar}\n")
        return 1
    return 2 if failed else 0


def _row_json(row: Row) -> dict[str, Any]:
    """A row as JSON (for scripts that read the table)."""
    return {"benchmark": row.name, "run": row.run, "listed": row.listed, "nets_loaded": row.nets_loaded,
            "nets_used": row.nets_used, "holds": row.holds, "violated": row.violated, "unknown": row.unknown,
            "errors": dict(row.errors), "wrong": list(row.wrong), "answered": row.answered, "known": row.known,
            "seconds": round(row.seconds, 3),
            "worst_overrun": None if row.worst_overrun == -math.inf else round(row.worst_overrun, 3),
            "anchor": None if row.anchor is None else {"tool": row.anchor.tool, "answered": row.anchor.answered,
                                                        "rows": row.anchor.rows}}


if __name__ == "__main__":
    sys.exit(main())
