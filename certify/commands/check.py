"""``certify check MODEL SPEC``: one model, one spec file, one verdict."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from certify.commands.common import EXIT_FOR_STATUS, add_device_option, add_proof_options, write_json
from certify.verdict import Counterexample

#: Counterexamples with at most this many input values are printed in full.
INLINE_VALUES = 16


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check one property file against one ONNX model",
                       description="Prove or refute a spec (.vnnlib or .yaml) on an ONNX model. "
                                   "Exit code: 0 holds, 1 violated, 2 bad input, 3 unknown, 4 internal error.")
    p.add_argument("model", type=Path, help="ONNX model file (X.onnx, or X.onnx.gz)")
    p.add_argument("spec", type=Path, help="property file: .vnnlib (or .vnnlib.gz) or .yaml")
    p.add_argument("--solver", default="default", help="preset name from solvers/ or a preset YAML file")
    p.add_argument("--engine", default=None, help="run only this engine (see `certify engines`)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole spec (default 60)")
    p.add_argument("--json", dest="json_out", default=None, metavar="PATH|-", help="also write JSON")
    p.add_argument("--cex", type=Path, default=None, metavar="PATH",
                   help="write the counterexample (x, y) to this .npz file")
    add_proof_options(p)
    p.add_argument("--certificate", type=Path, default=None, metavar="PATH",
                   help="write a HOLDS's proof certificate to this .npz file (several instances: PATH.<k>.npz); "
                        "check it later with `certify proof check`")
    add_device_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from certify.api import CheckOptions, check
    from certify.io.files import plain_name

    result = check(args.model, args.spec, CheckOptions(solver=args.solver, engine=args.engine, timeout=args.timeout,
                                                        device=args.device, proofs=args.proofs,
                                                        certificates=args.certificate))
    out = sys.stdout if args.json_out != "-" else sys.stderr
    out.write(f"{result.status.value.upper()}  ({result.engine}, {result.seconds:.2f} s)\n")
    if result.reason:
        out.write(f"reason: {result.reason}\n")
    proof = result.proof
    if proof is not None:
        out.write("proof: checked by the independent checker\n" if proof["checked"]
                  else f"proof: not checked ({proof['reason']})\n")
        if args.certificate is not None and result.status.value == "holds":
            out.write(f"certificate written to {args.certificate}\n")
    cex = result.counterexample
    if cex is not None:
        x = np.asarray(cex.x).reshape(-1)
        y = np.asarray(cex.y).reshape(-1)
        cex_path = args.cex
        if x.size <= INLINE_VALUES and cex_path is None:
            out.write(f"counterexample x = {np.array2string(x, precision=6, separator=', ')}\n")
            out.write(f"               y = {np.array2string(y, precision=6, separator=', ')}\n")
        else:
            cex_path = cex_path or Path(f"{plain_name(args.model).stem}.{plain_name(args.spec).stem}.cex.npz")
        if cex_path is not None:
            np.savez(cex_path, x=np.asarray(cex.x), y=y)
            out.write(f"counterexample ({x.size} inputs) written to {cex_path}\n")
        runtime = "onnx's reference evaluator" if cex.runtime == "onnx-reference" else "onnxruntime"
        out.write(f"counterexample replayed in {runtime}: {_replayed_words(cex)}\n")
    if args.json_out:
        from certify import __version__

        data = {"model": str(args.model), "spec": str(args.spec), "certify_version": __version__,
                **result.to_json()}
        write_json(data, args.json_out)
    return int(EXIT_FOR_STATUS[result.status])


def _replayed_words(cex: Counterexample) -> str:
    """How the counterexample was replayed, for the human output line."""
    if not cex.replayed:
        return "NO"
    if cex.precision == "float64":
        return "yes (float64 copy: the box holds no float32 point)"
    return "yes"
