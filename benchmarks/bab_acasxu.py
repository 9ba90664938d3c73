"""Run the ``bab`` engine alone on VNN-COMP instances and compare with ``expected.csv``.

Usage::

    python benchmarks/bab_acasxu.py BENCH_DIR [--filter REGEX] [--timeout S] [--limit N]
        [--threads 1] [--option key=value ...]

``BENCH_DIR`` holds ``*_instances.csv`` (``onnx,vnnlib,timeout``) and optionally
``expected.csv`` (``onnx,vnnlib,expected`` with sat = violated, unsat = holds).  Prints one
line per instance and a summary; load time (ONNX + VNN-LIB) is excluded from the engine time.
This runs the engine without the portfolio (no fuzzing first, no onnxruntime replay).
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from pathlib import Path

import torch

from certify.budget import Budget
from certify.engines.bab import make_engine
from certify.io.onnx import load_onnx
from certify.io.vnnlib import parse_vnnlib, to_problems
from certify.verdict import Status


def _value(text: str) -> object:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bench", type=Path)
    ap.add_argument("--filter", default="")
    ap.add_argument("--timeout", type=float, default=0.0, help="override the csv timeouts")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--option", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    options = {k: _value(v) for k, v in (o.split("=", 1) for o in args.option)}
    engine = make_engine(options)
    csv_path = next(args.bench.glob("*_instances.csv"))
    expected: dict[tuple[str, str], str] = {}
    exp_path = args.bench / "expected.csv"
    if exp_path.exists():
        with exp_path.open() as f:
            for row in csv.DictReader(f):
                expected[(row["onnx"], row["vnnlib"])] = row["expected"]
    with csv_path.open() as f:
        instances = [r for r in csv.reader(f) if r]
    pattern = re.compile(args.filter)
    instances = [r for r in instances if pattern.search(f"{r[0]} {r[1]}")]
    if args.limit:
        instances = instances[:args.limit]
    nets: dict[str, object] = {}
    counts = {"holds": 0, "violated": 0, "unknown": 0, "wrong": 0}
    total = 0.0
    for onnx_name, vnnlib_name, timeout in instances:
        onnx_name, vnnlib_name = onnx_name.strip(), vnnlib_name.strip()
        if onnx_name not in nets:
            nets[onnx_name] = load_onnx(args.bench / onnx_name)
        net = nets[onnx_name]
        problems = to_problems(parse_vnnlib(args.bench / vnnlib_name), net)
        limit = args.timeout or float(timeout)
        start = time.monotonic()
        budget = Budget.seconds(limit)
        status = Status.HOLDS
        reasons = []
        for problem in problems:
            verdict = engine.check(problem, budget)
            reasons.append(verdict.reason)
            if verdict.status is Status.VIOLATED:
                status = Status.VIOLATED
                break
            if verdict.status is Status.UNKNOWN:
                status = Status.UNKNOWN
        seconds = time.monotonic() - start
        total += seconds
        exp = expected.get((onnx_name, vnnlib_name), "")
        exp_status = {"sat": "violated", "unsat": "holds"}.get(exp, "")
        wrong = status is not Status.UNKNOWN and exp_status and status.value != exp_status
        counts[status.value] += 1
        counts["wrong"] += bool(wrong)
        print(f"{onnx_name:40s} {vnnlib_name:22s} {status.value:9s} exp={exp_status:9s} "
              f"{seconds:8.2f}s {'WRONG' if wrong else ''} {' '.join(r for r in reasons if r)}",
              flush=True)
    print(f"instances {len(instances)}: {counts}, total {total:.1f}s", flush=True)
    return 1 if counts["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
