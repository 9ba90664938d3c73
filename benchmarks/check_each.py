"""Every instance of a VNN-COMP benchmark as its own ``certify check`` process (the way a
user without ``certify suite`` would run them), scored against ``expected.csv``.

    python benchmarks/check_each.py BENCH_DIR [--jobs N] [--threads T] [--timeout S] [--solver P] [--out FILE]

Each row of ``*_instances.csv`` runs ``certify check ONNX VNNLIB --timeout T --json -`` in a
fresh Python process (start-up, imports and model loading included), ``--jobs`` at a time,
each with ``--threads`` torch threads (one by default, as each ``certify suite`` worker has:
two processes of two threads each on this 2-core machine ran 1_1 prop_1 in 26 s instead of 4).
Prints per-instance lines, then holds / violated / unknown / errors, wrong answers, the sum of
the processes' wall times and the total wall time.  ``--out`` writes the rows as CSV.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WANT = {"sat": "violated", "unsat": "holds"}


def run_one(root: Path, onnx: str, vnnlib: str, timeout: float, solver: str, threads: int) -> dict:
    cmd = [str(Path(sys.executable).parent / "certify"), "check", str(root / onnx), str(root / vnnlib),
           "--timeout", f"{timeout:g}", "--solver", solver, "--json", "-"]
    start = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 120, env=env)
    wall = time.monotonic() - start
    status, engine = "error", ""
    try:
        record = json.loads(proc.stdout[proc.stdout.index("{"):])
        status, engine = record.get("status", "error"), record.get("engine", "")
    except (ValueError, json.JSONDecodeError):
        status = "error"
    return {"onnx": onnx, "vnnlib": vnnlib, "status": status, "engine": engine, "wall": wall,
            "rc": proc.returncode}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench_dir", type=Path)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=None, help="override every instance's timeout")
    ap.add_argument("--solver", default="default")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per process (OMP_NUM_THREADS); jobs * threads should not exceed the cores")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    root = args.bench_dir
    [listing] = sorted(root.glob("*instances.csv"))[:1]
    rows = [r for r in csv.reader(listing.open()) if r and not r[0].startswith("#")]
    expected = {(r["onnx"], r["vnnlib"]): r["expected"] for r in csv.DictReader((root / "expected.csv").open())}
    start = time.monotonic()
    results = []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, root, o.strip(), v.strip(),
                               args.timeout if args.timeout else float(t), args.solver, args.threads)
                   for o, v, t in rows]
        for f in futures:
            r = f.result()
            r["expected"] = expected.get((r["onnx"], r["vnnlib"]), "?")
            want = WANT.get(r["expected"])
            r["wrong"] = want is not None and r["status"] in ("holds", "violated") and r["status"] != want
            results.append(r)
            print(f"{r['onnx']} {r['vnnlib']} {r['status']} {r['wall']:.1f}s"
                  + ("  WRONG" if r["wrong"] else ""), flush=True)
    wall = time.monotonic() - start
    counts = {s: sum(1 for r in results if r["status"] == s) for s in ("holds", "violated", "unknown", "error")}
    walls = [r["wall"] for r in results]
    print(f"\n{len(results)} instances, {args.jobs} at a time: holds {counts['holds']}, violated "
          f"{counts['violated']}, unknown {counts['unknown']}, error {counts['error']}, "
          f"wrong {sum(r['wrong'] for r in results)}; sum of process walls {sum(walls):.1f} s, "
          f"median {statistics.median(walls):.2f} s; total wall {wall:.1f} s")
    if args.out:
        with args.out.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(results[0]))
            w.writeheader()
            w.writerows(results)
    return 1 if any(r["wrong"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
