"""Run ``certify suite`` on a VNN-COMP benchmark folder and score it against ``expected.csv``.

Usage::

    python benchmarks/run_vnncomp.py BENCH_DIR [--timeout S] [--workers N] [--solver P]
        [--out DIR] [--resume] [--fuzz-first S] [--device cpu|cuda|auto]
        [--proofs check|record|off] [--certificates]

``BENCH_DIR`` holds ``*_instances.csv`` (``onnx,vnnlib,timeout``) and ``expected.csv``
(``onnx,vnnlib,expected`` with ``sat`` = violated, ``unsat`` = holds, ``unknown`` = nobody
knows).  Every instance list runs through :func:`certify.suite.run_suite` (long-lived workers,
results appended as they finish); ``--timeout`` overrides every row's timeout.

Writes, under ``--out`` (default ``out/vnncomp/<BENCH_DIR name>``):

* ``<list>.results.jsonl``: the suite's records (``--resume`` continues it);
* ``<list>.vnncomp.csv``: VNN-COMP 2021 results rows ``onnx,vnnlib,result,time``;
* ``<list>.csv``: per instance ``onnx,vnnlib,expected,status,check,engine,seconds,reason``,
  ``check`` being ``ok``, ``WRONG`` (contradicts expected.csv) or ``-`` (nothing to compare);
* ``summary.md``: the markdown table (also printed), with the proofs: how many HOLDS were
  confirmed by the proof checker, checking time against search time and, with
  ``--certificates``, the certificates' sizes (written to ``certificates/``).

Any verdict that contradicts ``expected.csv`` is printed loudly on stderr and makes the exit
code 1.  A violated verdict always carries a counterexample replayed in onnxruntime, so a
"wrong" violated answer means expected.csv or the replay is wrong; a wrong holds is a soundness
bug.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from certify.commands.suite import Progress
from certify.errors import CertifyError
from certify.suite import ResultsStore, SuiteOptions, format_summary, read_instances, run_suite, write_vnncomp_csv

#: expected.csv words -> the suite's status they agree with.
EXPECTED_STATUS = {"sat": "violated", "unsat": "holds", "violated": "violated", "holds": "holds"}


def read_expected(path: Path) -> dict[tuple[str, str], str]:
    if not path.is_file():
        return {}
    out: dict[tuple[str, str], str] = {}
    with open(path, newline="") as fh:
        for row in csv.reader(fh):
            if len(row) < 3 or row[0].strip() == "onnx":
                continue
            out[(row[0].strip(), row[1].strip())] = row[2].strip().lower()
    return out


def judge(record: dict[str, Any], expected: str | None) -> str:
    """ok, WRONG, or - (unknown/error answer, or nothing known to compare with)."""
    want = EXPECTED_STATUS.get(expected or "")
    if want is None or record["status"] not in ("holds", "violated"):
        return "-"
    return "ok" if record["status"] == want else "WRONG"


def run_list(csv_path: Path, expected: dict[tuple[str, str], str], options: SuiteOptions, out: Path,
             resume: bool) -> dict[str, Any]:
    entries = read_instances(csv_path)
    stem = csv_path.name.removesuffix(".csv")
    results = out / f"{stem}.results.jsonl"
    sys.stderr.write(f"== {csv_path}: {len(entries)} instances, results in {results}\n")
    with ResultsStore.open(results, resume=resume, overwrite=not resume) as store:
        progress = Progress(sys.stderr)
        try:
            report = run_suite(entries, store, options, progress)
        finally:
            progress.end()
    write_vnncomp_csv(report.records, out / f"{stem}.vnncomp.csv")
    wrong: list[str] = []
    with open(out / f"{stem}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["onnx", "vnnlib", "expected", "status", "check", "engine", "seconds", "reason"])
        for r in report.records:
            exp = expected.get((r["onnx"], r["vnnlib"]))
            verdict = judge(r, exp)
            if verdict == "WRONG":
                wrong.append(f"{r['onnx']} {r['vnnlib']}: certify says {r['status']} ({r['engine']}), "
                             f"expected.csv says {exp}")
            w.writerow([r["onnx"], r["vnnlib"], exp or "", r["status"], verdict, r["engine"],
                        f"{float(r['seconds']):.3f}", r["reason"]])
    s = report.summary
    answered_known = sum(1 for r in report.records if judge(r, expected.get((r["onnx"], r["vnnlib"]))) != "-")
    return {"name": stem, "summary": s, "wrong": wrong, "answered_known": answered_known,
            "expected_known": sum(1 for r in report.records
                                  if expected.get((r["onnx"], r["vnnlib"])) in EXPECTED_STATUS),
            "timeouts": sorted({float(r["timeout"]) for r in report.records}), "table": format_summary(s),
            "records": report.records}


def proof_lines(rows: list[dict[str, Any]], certificates: Path | None) -> list[str]:
    """How the HOLDS' proofs fared: checked count, checking vs search time, certificate sizes."""
    holds = [r for row in rows for r in row["records"] if r["status"] == "holds"]
    if not holds:
        return []
    proofs = [r.get("proof") or {} for r in holds]
    checked = sum(1 for p in proofs if p.get("checked"))
    check_s = sum(float(p.get("seconds", 0.0)) for p in proofs)
    total_s = sum(float(r["seconds"]) for r in holds)
    reasons = sorted({p.get("reason", "no proof record") for p in proofs if not p.get("checked")})
    lines = ["", f"Proofs: {checked} of {len(holds)} HOLDS confirmed by the proof checker; checking took "
                 f"{check_s:.1f} s against {total_s - check_s:.1f} s of search for them "
                 f"({check_s / max(total_s - check_s, 1e-9):.0%})."]
    if reasons:
        lines.append("Not confirmed: " + "; ".join(reasons[:5]) + ".")
    if certificates is not None:
        sizes = [f.stat().st_size for f in certificates.glob("*.npz")]
        if sizes:
            lines.append(f"Certificates: {len(sizes)} files, {sum(sizes) / 2**20:.1f} MiB in all, median "
                         f"{sorted(sizes)[len(sizes) // 2] / 1024:.1f} KiB, largest {max(sizes) / 2**20:.2f} MiB.")
    return lines


def markdown(bench: Path, rows: list[dict[str, Any]], options: SuiteOptions, wall: float,
             certificates: Path | None = None) -> str:
    lines = [f"## {bench.name}", "",
             f"certify suite, solver `{options.engine or options.solver}`, {options.workers} worker(s), "
             f"timeout {'%g s (override)' % options.timeout if options.timeout else 'per instance list'}"
             f"{', fuzz-first %g s' % options.fuzz_first if options.fuzz_first else ''}; "
             f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}", "",
             "| list | instances | holds | violated | unknown | errors | answered | wrong | total time (s) "
             "| median (s) | wall (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        s = r["summary"]
        lines.append(f"| {r['name']} | {s.count} | {s.holds} | {s.violated} | {s.unknown} | {s.error} | "
                     f"{s.holds + s.violated} | {len(r['wrong'])}{' **WRONG**' if r['wrong'] else ''} | "
                     f"{s.total_seconds:.1f} | {s.median_seconds:.2f} | {s.wall_seconds:.1f} |")
    lines += ["", f"Wall time of the whole run: {wall:.1f} s. \"wrong\" counts answers that contradict "
              "expected.csv (must be 0)."]
    lines += proof_lines(rows, certificates)
    for r in rows:
        for w in r["wrong"]:
            lines.append(f"- **WRONG** {w}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bench_dir", type=Path)
    ap.add_argument("--timeout", type=float, default=None, help="override every instance's timeout (seconds)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--solver", default="default", help="preset name or preset YAML file")
    ap.add_argument("--engine", default=None, help="run only this engine")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default out/vnncomp/BENCH_NAME)")
    ap.add_argument("--resume", action="store_true", help="continue the results files already in --out")
    ap.add_argument("--fuzz-first", type=float, default=0.0, metavar="S")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: CPUs / workers)")
    ap.add_argument("--proofs", default="check", choices=["check", "record", "off"])
    ap.add_argument("--certificates", action="store_true", help="keep every HOLDS's certificate under OUT/certificates")
    args = ap.parse_args(argv)

    lists = sorted(args.bench_dir.glob("*_instances.csv"))
    if not lists:
        sys.stderr.write(f"run_vnncomp: no *_instances.csv in {args.bench_dir}\n")
        return 2
    out = args.out or Path("out") / "vnncomp" / args.bench_dir.resolve().name
    out.mkdir(parents=True, exist_ok=True)
    expected = read_expected(args.bench_dir / "expected.csv")
    certificates = out / "certificates" if args.certificates else None
    if certificates is not None:
        certificates.mkdir(exist_ok=True)
    try:
        options = SuiteOptions(solver=args.solver, engine=args.engine, device=args.device, workers=args.workers,
                               timeout=args.timeout, fuzz_first=args.fuzz_first, proofs=args.proofs,
                               certificates=certificates, threads=args.threads)
        start = time.monotonic()
        rows = [run_list(p, expected, options, out, args.resume) for p in lists]
    except CertifyError as exc:
        sys.stderr.write(f"run_vnncomp: error: {exc}\n")
        return 2
    wall = time.monotonic() - start
    md = markdown(args.bench_dir, rows, options, wall, certificates)
    (out / "summary.md").write_text(md)
    for r in rows:
        sys.stderr.write(f"\n{r['name']}:\n{r['table']}\n")
    sys.stdout.write("\n" + md)
    sys.stdout.write(f"\nfiles: {out}/summary.md, {out}/*.csv, {out}/*.results.jsonl\n")
    wrong = [w for r in rows for w in r["wrong"]]
    if wrong:
        bar = "!" * 78
        sys.stderr.write(f"\n{bar}\n!!! {len(wrong)} VERDICT(S) CONTRADICT expected.csv:\n")
        for w in wrong:
            sys.stderr.write(f"!!!   {w}\n")
        sys.stderr.write(f"{bar}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
