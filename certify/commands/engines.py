"""``certify engines [--ops MODEL]``: what each engine can do, and whether it is installed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("engines", help="list engines, their capabilities and availability")
    p.add_argument("--ops", type=Path, default=None, metavar="MODEL",
                   help="also say, per engine, whether it has a rule for every op of this ONNX model")
    p.add_argument("--options", default=None, metavar="ENGINE",
                   help="list this engine's options (as a preset sets them), their types, defaults and meaning")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from certify.engines.registry import ENGINES, make_engine
    from certify.portfolio import preset_names

    if args.options is not None:
        return _options(args.options)

    net = None
    if args.ops is not None:
        from certify.api import load_model

        net = load_model(args.ops)
        if net.is_opaque:
            reason = next(n.attrs["reason"] for n in net.nodes if n.op.value == "opaque")
            sys.stdout.write(f"{args.ops}: not converted ({reason}); it runs whole in onnxruntime\n\n")
        else:
            sys.stdout.write(f"{args.ops}: ops {', '.join(sorted(op.value for op in net.ops()))}\n\n")
    rows = [("engine", "available", "proves", "falsifies", "complete", "model ops" if net else "", "summary")]
    for name, entry in ENGINES.items():
        try:
            engine = make_engine(name)
        except ImportError as exc:
            rows.append((name, f"no ({exc.name} missing)", "", "", "", "", entry.summary))
            continue
        avail = engine.available()
        caps = engine.capabilities
        ops_col = ""
        if net is not None:
            missing = sorted(op.value for op in net.ops() if op.value not in caps.ops)
            ops_col = "all" if not missing else "missing " + ",".join(missing)
        rows.append((name, "yes" if avail else f"no: {avail.reason}", _yn(caps.proves), _yn(caps.falsifies),
                     _yn(caps.complete), ops_col, entry.summary))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")
    sys.stdout.write(f"\npresets: {', '.join(preset_names())}\n")
    return 0


def _yn(flag: bool) -> str:
    return "yes" if flag else "no"


def _options(name: str) -> int:
    """The options of engine ``name``: one line per option (nested groups as dotted paths), then
    the option types' documentation."""
    import dataclasses
    import inspect
    import typing

    from certify.engines.registry import make_engine
    from certify.options import describe

    cls = type(make_engine(name).options)
    rows = [("option", "type", "default"), *describe(cls)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")
    seen: list[type] = []

    def collect(t: type) -> None:
        if t in seen:
            return
        seen.append(t)
        hints = typing.get_type_hints(t)
        for f in dataclasses.fields(t):
            if dataclasses.is_dataclass(hints[f.name]):
                collect(hints[f.name])

    collect(cls)
    for t in seen:
        doc = inspect.getdoc(t)
        if doc:
            sys.stdout.write(f"\n{t.__name__}:\n{doc}\n")
    return 0
