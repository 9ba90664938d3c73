"""The ``certify`` command line.  Subcommands live in :mod:`certify.commands`.

Exit codes: 0 holds, 1 violated, 2 bad input or usage, 3 unknown, 4 internal error.
Expected failures (:class:`certify.errors.CertifyError`) print one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from certify import __version__
from certify.commands.common import Exit
from certify.errors import CertifyError

#: Subcommand modules, in the order ``certify --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "certify.commands.check",
    "certify.commands.suite",
    "certify.commands.fuzz",
    "certify.commands.engines",
    "certify.commands.report",
    "certify.commands.spec",
    "certify.commands.proof",
    "certify.train.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="certify", description="Prove or refute properties of neural networks.")
    parser.add_argument("--version", action="version", version=f"certify {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser



def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return int(Exit.USAGE)
    try:
        return int(args.func(args))
    except CertifyError as exc:
        sys.stderr.write(f"certify: error: {exc}\n")
        return int(Exit.USAGE)
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): not an error of ours
        return 0
    except KeyboardInterrupt:
        sys.stderr.write("certify: interrupted\n")
        return 130
    except Exception as exc:  # a bug: one line, the traceback only with --debug
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"certify: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)\n")
        return int(Exit.INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
