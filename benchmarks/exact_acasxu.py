"""Exact engines on ACAS Xu (VNN-COMP 2021): ``milp`` and ``smt`` next to ``bab``.

    python -m benchmarks.exact_acasxu --engines milp smt bab --cap 60 --sample 10

Reads ``acasxu/expected.csv`` (sat = violated, unsat = holds) under ``--root``; each instance
runs with ``min(instance timeout, --cap)`` seconds.  ``--sample N`` takes N instances spread
over the properties (deterministic).  Prints one row per instance and a summary per engine.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "vnncomp2021" / "acasxu"


def instances(root: Path, sample: int | None) -> list[tuple[str, str, str, float]]:
    timeouts = {}
    with open(root / "acasxu_instances.csv") as f:
        for onnx_name, vnnlib, timeout in csv.reader(f):
            timeouts[(onnx_name, vnnlib)] = float(timeout)
    rows = []
    with open(root / "expected.csv") as f:
        for r in csv.DictReader(f):
            rows.append((r["onnx"], r["vnnlib"], r["expected"], timeouts.get((r["onnx"], r["vnnlib"]), 116.0)))
    if sample is None or sample >= len(rows):
        return rows
    # Round-robin over properties so every property is represented.
    by_prop: dict[str, list] = {}
    for r in rows:
        by_prop.setdefault(r[1], []).append(r)
    out: list = []
    k = 0
    while len(out) < sample:
        for prop in sorted(by_prop):
            if k < len(by_prop[prop]) and len(out) < sample:
                out.append(by_prop[prop][(k * 7) % len(by_prop[prop])])
        k += 1
    return out


def main() -> None:
    import torch

    torch.set_num_threads(1)
    from certify.budget import Budget
    from certify.engines.registry import make_engine
    from certify.io.onnx import load_onnx
    from certify.io.vnnlib import parse_vnnlib, to_problems
    from certify.verdict import Status

    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--engines", nargs="+", default=["milp", "smt", "bab"])
    ap.add_argument("--cap", type=float, default=116.0)
    ap.add_argument("--sample", type=int)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    want = {"sat": "violated", "unsat": "holds"}
    results = []
    for onnx_name, vnnlib, expected, timeout in instances(args.root, args.sample):
        net = load_onnx(args.root / onnx_name)
        problems = to_problems(parse_vnnlib(args.root / vnnlib), net, f"{onnx_name}:{vnnlib}")
        row = {"onnx": onnx_name, "vnnlib": vnnlib, "expected": want[expected], "engines": {}}
        for name in args.engines:
            engine = make_engine(name)
            budget = Budget.seconds(min(timeout, args.cap))
            start = time.monotonic()
            status = Status.HOLDS
            for p in problems:  # a VNN-LIB file may hold several boxes: all must hold
                v = engine.check(p, budget)
                if v.status is not Status.HOLDS:
                    status = v.status
                    break
            row["engines"][name] = {"status": status.value, "seconds": round(time.monotonic() - start, 2)}
        results.append(row)
        print(onnx_name, vnnlib, row["expected"],
              " ".join(f"{n}={e['status']}({e['seconds']}s)" for n, e in row["engines"].items()), flush=True)
        if args.out:
            args.out.write_text(json.dumps(results))
    print("\n| engine | answered | correct | wrong | unknown | mean s (answered) | total s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.engines:
        es = [(r["expected"], r["engines"][name]) for r in results]
        answered = [(x, e) for x, e in es if e["status"] != "unknown"]
        correct = sum(1 for x, e in answered if e["status"] == x)
        mean = sum(e["seconds"] for _, e in answered) / max(1, len(answered))
        print(f"| {name} | {len(answered)}/{len(es)} | {correct} | {len(answered) - correct} | "
              f"{len(es) - len(answered)} | {mean:.1f} | {sum(e['seconds'] for _, e in es):.0f} |")


if __name__ == "__main__":
    main()
