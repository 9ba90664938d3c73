"""``certify proof check CERT MODEL SPEC``: re-check a proof certificate with the independent
checker (:mod:`certify.proof.check`), which reads the model itself.

Exit codes as ``certify check``: 0 the certificate is valid (the property holds), 3 it is not
(the property stays unproved; the reason is printed), 2 unreadable input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from certify.commands.common import Exit, write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("proof", help="work with proof certificates",
                       description="Proof certificates written by `certify check --certificate`.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    c = verbs.add_parser("check", help="re-check a certificate against the model and the spec",
                         description="Re-check CERT with the independent checker: it reads MODEL itself, takes the "
                                     "property from SPEC, and recomputes every bound in outward-rounded arithmetic. "
                                     "Exit code: 0 valid, 3 invalid, 2 bad input.")
    c.add_argument("certificate", type=Path, help="the certificate (.npz)")
    c.add_argument("model", type=Path, help="ONNX model file (X.onnx, or X.onnx.gz)")
    c.add_argument("spec", type=Path, help="property file: .vnnlib (or .vnnlib.gz) or .yaml")
    c.add_argument("--json", dest="json_out", default=None, metavar="PATH|-", help="also write JSON")
    c.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from certify.api import load_instances
    from certify.errors import SpecError
    from certify.io.files import read_bytes, resolve
    from certify.proof.certificate import Certificate, CertificateError, problem_digest
    from certify.proof.check import check_certificate

    try:
        cert = Certificate.load(args.certificate)
    except CertificateError as exc:
        raise SpecError(str(exc)) from None
    model = read_bytes(resolve(args.model))
    instances = [i for i in load_instances(args.model, args.spec) if i.model is not None]
    if not instances:
        raise SpecError(f"{args.spec}: its lowering changes the network; certificates cover the model as is")
    digests = [problem_digest(i.problem.box.lower, i.problem.box.upper, [(h.A, h.b) for h in i.problem.unsafe])
               for i in instances]
    pick = digests.index(cert.problem_sha256) if cert.problem_sha256 in digests else 0
    problem = instances[pick].problem
    result = check_certificate(cert, model, problem.box.lower, problem.box.upper,
                               [(h.A, h.b) for h in problem.unsafe])
    out = sys.stdout if args.json_out != "-" else sys.stderr
    name = problem.name or f"instance {pick}"
    if result.valid:
        out.write(f"VALID  ({name}: {result.nodes} nodes, {result.leaves} leaves, {result.closures} closures, "
                  f"{result.seconds:.2f} s)\n")
    else:
        out.write(f"INVALID  ({name}, {result.seconds:.2f} s)\nreason: {result.reason}\n")
    if args.json_out:
        write_json({"certificate": str(args.certificate), "model": str(args.model), "spec": str(args.spec),
                    "instance": name, "valid": result.valid, "reason": result.reason, "nodes": result.nodes,
                    "leaves": result.leaves, "closures": result.closures, "seconds": round(result.seconds, 4)},
                   args.json_out)
    return int(Exit.HOLDS if result.valid else Exit.UNKNOWN)
