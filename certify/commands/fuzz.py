"""``certify fuzz``: falsify many properties at once with the batch fuzzer.

    certify fuzz MODEL SPEC... [--budget S] [--device auto|cpu|cuda]
    certify fuzz --instances INSTANCES.csv --budget S --results OUT.jsonl

Every instance is fuzzed under one shared budget (instances of networks with one structure in
one batch); every counterexample is replayed in onnxruntime before it is reported.  Exit code
1 when anything was violated, 3 otherwise (the fuzzer never proves), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from certify.commands.common import Exit, add_device_option
from certify.errors import UsageError
from certify.instance import Instance
from certify.verdict import Status, Verdict


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fuzz", help="search for counterexamples of many properties at once (batch fuzzer)",
        description="Search for counterexamples of every given property under one shared time budget: "
                    "properties of one network (or of networks of one structure) share one tensor batch. "
                    "Counterexamples are replayed in onnxruntime. Exit code: 1 if any property is violated, "
                    "3 otherwise (unknown; fuzzing never proves), 2 on bad input.")
    p.add_argument("model", nargs="?", type=Path, help="ONNX model (omit with --instances)")
    p.add_argument("specs", nargs="*", type=Path, help="VNN-LIB or YAML spec files")
    p.add_argument("--instances", type=Path, default=None, metavar="INSTANCES.csv",
                   help="VNN-COMP instance list (onnx,vnnlib,timeout; paths relative to the CSV)")
    p.add_argument("--results", type=Path, default=None, metavar="OUT.jsonl",
                   help="write one JSON Lines record per instance (default with --instances: INSTANCES_STEM.fuzz.jsonl)")
    p.add_argument("--budget", type=float, default=10.0, metavar="S", help="seconds for everything (default 10)")
    p.add_argument("--batch", type=int, default=None,
                   help="lanes per forward/backward pass (default: chosen per network, 256 to 4096)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_device_option(p)
    p.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class _Row:
    onnx: str
    vnnlib: str
    instances: tuple[int, ...]  # indices into the flat instance list


def _load(args: argparse.Namespace) -> tuple[list[_Row], list[Instance]]:
    from certify.api import load_instances, load_model
    from certify.replay import OnnxOracle

    if args.instances is not None:
        if args.model is not None or args.specs:
            raise UsageError("give either MODEL SPEC... or --instances, not both")
        from certify.suite import read_instances

        entries = [(e.onnx, e.vnnlib, e.onnx_path, e.vnnlib_path) for e in read_instances(args.instances)]
    else:
        if args.model is None or not args.specs:
            raise UsageError("give MODEL and at least one SPEC, or --instances INSTANCES.csv")
        entries = [(str(args.model), str(s), args.model, s) for s in args.specs]
    networks: dict[Path, Any] = {}
    oracles: dict[Path, OnnxOracle] = {}
    rows: list[_Row] = []
    flat: list[Instance] = []
    warmed: set[Path] = set()
    for onnx, vnnlib, onnx_path, spec_path in entries:
        key = Path(onnx_path).resolve()
        if key not in networks:
            networks[key] = load_model(onnx_path)
            oracles[key] = OnnxOracle(Path(onnx_path))
        insts = load_instances(onnx_path, spec_path, network=networks[key])
        shared = [Instance(i.problem, oracles[key], i.lift)
                  if isinstance(i.oracle, OnnxOracle) and Path(i.oracle.path).resolve() == key else i
                  for i in insts]
        if insts and key not in warmed:  # open the onnxruntime session before the budget starts
            oracles[key].run(insts[0].problem.box.center)
            warmed.add(key)
        rows.append(_Row(onnx, vnnlib, tuple(range(len(flat), len(flat) + len(shared)))))
        flat.extend(shared)
    return rows, flat


def _record(row: _Row, verdicts: list[Verdict], seconds: float) -> dict[str, Any]:
    hits = [v for v in verdicts if v.status is Status.VIOLATED and v.counterexample is not None]
    if hits:
        v = min(hits, key=lambda h: h.seconds)
        cex = v.counterexample
        assert cex is not None
        return {"onnx": row.onnx, "vnnlib": row.vnnlib, "status": "violated", "seconds": v.seconds,
                "engine": "fuzz", "reason": "",
                "counterexample": {"x": np.asarray(cex.x, dtype=np.float64).reshape(-1).tolist(),
                                   "y": np.asarray(cex.y, dtype=np.float64).reshape(-1).tolist(),
                                   "replayed": cex.replayed}}
    reason = "; ".join(dict.fromkeys(v.reason for v in verdicts)) or "no counterexample found"
    return {"onnx": row.onnx, "vnnlib": row.vnnlib, "status": "unknown", "seconds": seconds, "engine": "fuzz",
            "reason": reason, "counterexample": None}


def run(args: argparse.Namespace) -> int:
    from certify.api import resolve_device
    from certify.budget import Budget
    from certify.fuzz import FuzzOptions, fuzz_instances

    if not args.budget > 0:
        raise UsageError(f"--budget must be positive, got {args.budget}")
    device = resolve_device(args.device)
    start = time.monotonic()
    rows, flat = _load(args)
    options = FuzzOptions(seed=args.seed, **({"batch": args.batch} if args.batch else {}))
    t0 = time.monotonic()
    verdicts = fuzz_instances(flat, Budget(t0 + args.budget, device), options)
    seconds = time.monotonic() - t0
    records = [_record(r, [verdicts[i] for i in r.instances], seconds) for r in rows]
    results = args.results
    if results is None and args.instances is not None:
        results = Path(args.instances.stem + ".fuzz.jsonl")
    if results is not None:
        with open(results, "w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec) + "\n")
    violated = sum(r["status"] == "violated" for r in records)
    for rec in records:
        x = rec["counterexample"]["x"] if rec["counterexample"] else None
        shown = "" if x is None else (f"  x = {np.round(x, 6).tolist()}" if len(x) <= 8 else f"  x: {len(x)} values")
        print(f"{rec['status']:<8} {rec['seconds']:7.3f} s  {Path(rec['onnx']).name} {Path(rec['vnnlib']).name}{shown}")
    print(f"fuzz: {violated} of {len(records)} violated in {time.monotonic() - start:.2f} s "
          f"(fuzzing {seconds:.2f} s on {device})" + (f"; results in {results}" if results else ""),
          file=sys.stderr)
    return int(Exit.VIOLATED if violated else Exit.UNKNOWN)
