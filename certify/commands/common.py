"""Exit codes and small helpers shared by the CLI subcommands."""

from __future__ import annotations

import json
import sys
from enum import IntEnum
from pathlib import Path
from typing import Any

from certify.verdict import Status


class Exit(IntEnum):
    HOLDS = 0
    VIOLATED = 1
    USAGE = 2
    UNKNOWN = 3
    INTERNAL = 4


EXIT_FOR_STATUS: dict[Status, Exit] = {
    Status.HOLDS: Exit.HOLDS,
    Status.VIOLATED: Exit.VIOLATED,
    Status.UNKNOWN: Exit.UNKNOWN,
}


def write_json(data: dict[str, Any], target: str) -> None:
    """Write ``data`` to ``target`` (a path, or ``-`` for stdout)."""
    text = json.dumps(data, indent=2)
    if target == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(target).write_text(text + "\n")


def add_device_option(parser: Any) -> None:
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where tensors live (default: cuda when available)")


def add_proof_options(parser: Any) -> None:
    parser.add_argument("--proofs", choices=["check", "record", "off"], default="check",
                        help="check: every HOLDS carries a certificate the independent proof checker confirms "
                             "before it is reported (a rejected one becomes UNKNOWN); record: certificates "
                             "without the check; off: neither (default: check)")
