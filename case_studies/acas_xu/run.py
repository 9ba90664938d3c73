"""ACAS Xu: the ten properties on the 45 networks (VNN-COMP 2021, 186 instances), then the report.

    python case_studies/acas_xu/run.py --bench ../shared/benchmarks/vnncomp2021/acasxu [--timeout S]
        [--limit N] [--workers W] [--solver PRESET] [--out DIR] [--resume]

1. picks the instances (all 186, or with ``--limit N`` a subset that covers every property
   first) and writes them as ``OUT/instances.csv`` (paths relative to OUT);
2. runs ``certify suite`` on them (results in ``OUT/results.jsonl``, VNN-COMP CSV in
   ``OUT/results.csv``; ``--resume`` continues an interrupted run);
3. runs ``certify report`` (``OUT/report.html``, ``OUT/report.md`` and ``OUT/report_files/``),
   checking every verdict against the benchmark's ``expected.csv``.

Exit code 0 when every decided verdict agrees with expected.csv, 1 when one contradicts it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", type=Path, required=True, help="the VNN-COMP 2021 acasxu folder")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per instance (default: the instance list's own, 116 s)")
    p.add_argument("--limit", type=int, default=None, help="run only N instances (every property first)")
    p.add_argument("--workers", type=int, default=1, help="suite worker processes (default 1)")
    p.add_argument("--solver", default="default", help="solver preset (default: default)")
    p.add_argument("--out", type=Path, default=HERE / "results", help="output folder (default: results/ here)")
    p.add_argument("--resume", action="store_true", help="continue OUT/results.jsonl instead of starting again")
    p.add_argument("--title", default=None, help="report title")
    return p.parse_args(argv)


def read_rows(bench: Path) -> list[tuple[str, str, str]]:
    csv_path = bench / "acasxu_instances.csv"
    if not csv_path.is_file():
        sys.exit(f"run.py: {csv_path} not found (pass --bench the acasxu folder)")
    with open(csv_path, newline="") as fh:
        return [(r[0].strip(), r[1].strip(), r[2].strip()) for r in csv.reader(fh) if len(r) == 3]


def pick(rows: list[tuple[str, str, str]], limit: int | None) -> list[tuple[str, str, str]]:
    """All rows, or ``limit`` of them: first one row of each property, then the rest in order."""
    if limit is None or limit >= len(rows):
        return rows
    first: dict[str, int] = {}
    for k, (_, vnnlib, _) in enumerate(rows):
        first.setdefault(vnnlib, k)
    order = sorted(first.values()) + [k for k in range(len(rows)) if k not in set(first.values())]
    return [rows[k] for k in sorted(order[:limit])]


def write_instances(rows: list[tuple[str, str, str]], bench: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rel = Path(os.path.relpath(bench.resolve(), out.resolve()))
    path = out / "instances.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        for onnx, vnnlib, timeout in rows:
            w.writerow([(rel / onnx).as_posix(), (rel / vnnlib).as_posix(), timeout])
    return path


def certify(*args: str) -> None:
    cmd = [sys.executable, "-m", "certify.cli", *args]
    print("+ certify " + " ".join(args), flush=True)
    code = subprocess.call(cmd, cwd=ROOT)
    if code != 0:
        sys.exit(f"run.py: certify {args[0]} failed with exit code {code}")


def compare(results: Path, bench: Path) -> tuple[Counter[str], list[str]]:
    expected: dict[tuple[str, str], str] = {}
    with open(bench / "expected.csv", newline="") as fh:
        for r in csv.reader(fh):
            if len(r) == 3 and r[2] in ("sat", "unsat"):
                expected[(r[0], r[1])] = "violated" if r[2] == "sat" else "holds"
    counts: Counter[str] = Counter()
    wrong = []
    for line in results.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        counts[rec["status"]] += 1
        key = (Path(rec["onnx"]).name, Path(rec["vnnlib"]).name)
        want = expected.get(key)
        if rec["status"] in ("holds", "violated") and want is not None and want != rec["status"]:
            wrong.append(f"{key[0]} {key[1]}: {rec['status']}, expected {want}")
    return counts, wrong


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = args.bench.resolve()
    rows = pick(read_rows(bench), args.limit)
    out = args.out.resolve()
    instances = write_instances(rows, bench, out)
    results = out / "results.jsonl"
    suite = ["suite", str(instances), "--results", str(results), "--vnncomp-csv", str(out / "results.csv"),
             "--workers", str(args.workers), "--solver", args.solver, "--no-progress",
             "--resume" if args.resume else "--overwrite"]
    if args.timeout is not None:
        suite += ["--timeout", str(args.timeout)]
    certify(*suite)
    title = args.title or (f"ACAS Xu: {len(rows)} instances of the ten properties on the 45 networks"
                           + (f" ({args.timeout:g} s per instance)" if args.timeout else ""))
    certify("report", str(results), "-o", str(out / "report"), "--title", title,
            "--expected", str(bench / "expected.csv"), "--search", str(bench))
    counts, wrong = compare(results, bench)
    print("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for w in wrong:
        print("MISMATCH " + w)
    print(f"report: {out / 'report.html'}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
