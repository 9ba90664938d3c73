"""``certify report RESULTS... -o OUT``: check JSON / suite JSON Lines -> OUT.html and OUT.md."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from certify.commands.common import Exit
from certify.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="turn check/suite results into an HTML and a Markdown report",
        description="Read results written by `certify check --json` (one JSON object per file) or "
                    "`certify suite` (JSON Lines) and write OUT.html (one self-contained page: summary "
                    "table, plots, counterexamples, file hashes and versions) and OUT.md (its PNGs in "
                    "OUT_files/). Exit code: 0 written, 2 bad input.")
    p.add_argument("results", type=Path, nargs="+", help="result files (.json from check, .jsonl from suite)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                   help="output stem: writes OUT.html, OUT.md and OUT_files/")
    p.add_argument("--title", default="certify report", help="the report's title")
    p.add_argument("--image-shape", default=None, metavar="HxW",
                   help="draw inputs of H*W (or H*W*3) values as images (default: from the record's "
                        "input shape, or any perfect-square input of at least 16 values)")
    p.add_argument("--search", type=Path, action="append", default=[], metavar="DIR",
                   help="also look for relative model/spec paths here (for hashes); repeatable")
    p.add_argument("--expected", type=Path, default=None, metavar="CSV",
                   help="onnx,vnnlib,expected rows (sat/unsat or violated/holds): flag contradicting verdicts")
    p.set_defaults(func=run)


def parse_image_shape(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX*,]\s*(\d+)\s*", text)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise UsageError(f"--image-shape: expected HxW (e.g. 28x28), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def run(args: argparse.Namespace) -> int:
    from certify.report import ReportOptions, make_report
    from certify.report.load import read_expected

    shape = parse_image_shape(args.image_shape) if args.image_shape else None
    expected = read_expected(args.expected) if args.expected else None
    options = ReportOptions(title=args.title, image_shape=shape, expected=expected)
    written = make_report(args.results, args.output, options, search=tuple(args.search))
    sys.stdout.write(f"report: {written.html}\n        {written.markdown} (images in {written.assets})\n")
    return int(Exit.HOLDS)
