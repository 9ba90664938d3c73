"""Mean final-layer bound width of IBP, CROWN and alpha-CROWN on a VNN-COMP benchmark folder.

For every instance (net, property) of BENCH_DIR/*_instances.csv, each output neuron is bounded
over the property's input box(es); the width ``upper - lower`` is averaged over outputs and
instances.  Usage::

    python benchmarks/bound_width.py ../shared/benchmarks/vnncomp2021/acasxu [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

from certify.bounds import (
    AlphaOptions,
    alpha_crown_objective,
    crown_bounds,
    crown_objective,
    ibp,
    ibp_objective,
    input_bounds,
)
from certify.io.onnx import load_onnx
from certify.io.vnnlib import parse_vnnlib, to_problems


def widths(problem, alpha_iters: int) -> dict[str, float]:
    net = problem.network.to(torch.float64)
    box = input_bounds(problem.box.lower[None], problem.box.upper[None])
    n = net.output_size
    eye = torch.eye(n, dtype=torch.float64)
    c = torch.cat([eye, -eye]).unsqueeze(0)
    out = {}
    lo = ibp_objective(net, ibp(net, box), c)[0]
    out["ibp"] = float((-(lo[:n] + lo[n:])).mean())
    bounds = crown_bounds(net, box)
    lo = crown_objective(net, bounds, c).lower[0]
    out["crown"] = float((-(lo[:n] + lo[n:])).mean())
    best, _ = alpha_crown_objective(net, bounds, c, AlphaOptions(iterations=alpha_iters))
    lo = best.lower[0]
    out["alpha-crown"] = float((-(lo[:n] + lo[n:])).mean())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("bench_dir", type=Path)
    ap.add_argument("--limit", type=int, default=0, help="only the first N instances (0: all)")
    ap.add_argument("--alpha-iterations", type=int, default=30)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    csv_path = next(args.bench_dir.glob("*_instances.csv"))
    rows = [r for r in csv.reader(csv_path.open()) if r]
    if args.limit:
        rows = rows[: args.limit]
    nets: dict[str, object] = {}
    acc: dict[str, list[float]] = {"ibp": [], "crown": [], "alpha-crown": []}
    start = time.monotonic()
    for onnx_name, vnnlib_name, _ in rows:
        onnx_name, vnnlib_name = onnx_name.strip(), vnnlib_name.strip()
        if onnx_name not in nets:
            nets[onnx_name] = load_onnx(args.bench_dir / onnx_name)
        for p in to_problems(parse_vnnlib(args.bench_dir / vnnlib_name), nets[onnx_name]):
            for k, v in widths(p, args.alpha_iterations).items():
                acc[k].append(v)
    sys.stdout.write(f"{args.bench_dir.name}: {len(acc['ibp'])} input boxes, {time.monotonic() - start:.1f} s\n")
    sys.stdout.write("| method | mean final-layer width | median |\n|---|---|---|\n")
    for k, v in acc.items():
        sys.stdout.write(f"| {k} | {statistics.fmean(v):.4g} | {statistics.median(v):.4g} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
