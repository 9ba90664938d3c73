"""``certify spec validate FILE [--model M]`` and ``certify spec export FILE --model M --vnnlib DIR``.

``validate`` checks a YAML spec (and, with ``--model``, lowers it against the model: shapes,
indices, labels).  ``export`` lowers the spec and writes one VNN-LIB file per problem, plus
the augmented network as ONNX where the lowering adds layers (blur, brightness/contrast,
monotonicity), and an ``instances.csv`` in the VNN-COMP format (onnx, vnnlib, timeout).
A kind VNN-LIB 1.0 cannot state (an L2 ball) is refused with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from certify.commands.common import Exit
from certify.errors import SpecError

#: Timeout written into the exported ``instances.csv`` (seconds).
EXPORT_TIMEOUT = 60


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spec", help="validate or export YAML property files",
                       description="Validate a YAML spec, or export it as VNN-LIB (+ ONNX). "
                                   "Exit code 0 on success, 2 on a bad spec or an unexportable kind.")
    actions = p.add_subparsers(dest="spec_command", metavar="ACTION")
    v = actions.add_parser("validate", help="check a spec file (and that it fits a model)")
    v.add_argument("file", type=Path, help="YAML spec file")
    v.add_argument("--model", type=Path, default=None, help="ONNX model: also lower the spec against it")
    v.set_defaults(func=run_validate)
    e = actions.add_parser("export", help="write VNN-LIB (and augmented ONNX) for each problem")
    e.add_argument("file", type=Path, help="YAML spec file")
    e.add_argument("--model", type=Path, required=True, help="ONNX model the spec is about")
    e.add_argument("--vnnlib", type=Path, required=True, metavar="DIR", help="output folder (created)")
    e.set_defaults(func=run_export)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return int(Exit.USAGE)


def _load(path: Path):  # noqa: ANN202 - SpecDocument
    from certify.io.yaml import load_spec

    if path.suffix.lower() not in (".yaml", ".yml"):
        raise SpecError(f"{path}: expected a .yaml or .yml spec file")
    return load_spec(path)


def run_validate(args: argparse.Namespace) -> int:
    doc = _load(args.file)
    kinds = ", ".join(sorted({p.kind for p in doc.properties}))
    line = f"OK  {args.file}: {len(doc.properties)} propert{'y' if len(doc.properties) == 1 else 'ies'} ({kinds})"
    if args.model is not None:
        from certify.api import load_model
        from certify.lower import lower_document

        lowered = lower_document(doc, load_model(args.model), args.file.parent, model_path=args.model)
        line += f"; {len(lowered)} problem(s) on {args.model.name}"
    sys.stdout.write(line + "\n")
    return int(Exit.HOLDS)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_") or "problem"


def run_export(args: argparse.Namespace) -> int:
    from certify.api import load_model
    from certify.io.onnx_writer import save_onnx
    from certify.io.vnnlib_writer import write_vnnlib
    from certify.lower import lower_document

    doc = _load(args.file)
    for i, prop in enumerate(doc.properties):
        if getattr(prop, "norm", "linf") == "l2":
            where = f"properties[{i}]." if len(doc.properties) > 1 else ""
            raise SpecError(f"{args.file}: {where}norm: an L2 ball cannot be exported: VNN-LIB 1.0 states "
                            "only linear constraints (use norm: linf for its enclosing box)")
    network = load_model(args.model)
    lowered = lower_document(doc, network, args.file.parent, model_path=args.model)
    out: Path = args.vnnlib
    out.mkdir(parents=True, exist_ok=True)
    rows, augmented, used = [], 0, set()
    for k, lw in enumerate(lowered):
        stem = _safe(lw.problem.name or f"{args.file.stem}_{k}")
        while stem in used:
            stem += f"_{k}"
        used.add(stem)
        if lw.problem.network is network:
            model_ref = str(args.model.resolve())
        else:
            model_ref = save_onnx(lw.problem.network, out / f"{stem}.onnx").name
            augmented += 1
        comment = (f"certify spec export: {args.file.name}, problem {lw.problem.name!r}\n"
                   f"network: {model_ref}\n"
                   + "".join(f"{key}: {value}\n" for key, value in lw.problem.meta.items()))
        write_vnnlib(lw.problem, out / f"{stem}.vnnlib", comment)
        rows.append(f"{model_ref},{stem}.vnnlib,{EXPORT_TIMEOUT}")
    (out / "instances.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    sys.stdout.write(f"wrote {len(lowered)} VNN-LIB file(s) and {augmented} augmented ONNX model(s) to {out} "
                     f"(instances.csv lists the pairs)\n")
    return int(Exit.HOLDS)
