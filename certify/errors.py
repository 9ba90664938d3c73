"""The small hierarchy of expected failures.

Expected failures (bad input, a missing optional solver) derive from :class:`CertifyError`;
the CLI prints them as one line and exits with code 2.  Anything else is a bug and
propagates.
"""

from __future__ import annotations


class CertifyError(Exception):
    """Base class of every expected, user-facing failure."""


class ModelError(CertifyError):
    """The model file cannot be read or is not a valid network (truncated, malformed...)."""


class UnsupportedOp(ModelError):
    """The model uses an operator (or an operator variant) certify cannot handle."""

    def __init__(self, op_type: str, node_name: str, detail: str = "") -> None:
        self.op_type = op_type
        self.node_name = node_name
        self.detail = detail
        extra = f": {detail}" if detail else ""
        super().__init__(f"unsupported ONNX op {op_type!r} at node {node_name!r}{extra}")


class SpecError(CertifyError):
    """A specification (YAML or VNN-LIB) is malformed or does not fit the model."""


class ShapeMismatch(SpecError):
    """A spec's input or output size does not match the model."""


class SolverUnavailable(CertifyError):
    """An engine's optional dependency is not installed."""

    def __init__(self, engine: str, package: str, extra: str) -> None:
        self.engine = engine
        self.package = package
        self.extra = extra
        super().__init__(
            f"engine {engine!r} needs {package}, which is not installed: "
            f"pip install 'certify[{extra}]'"
        )


class UsageError(CertifyError):
    """The command line or options are inconsistent (unknown engine or preset...)."""
