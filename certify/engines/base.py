"""The engine contract: what an engine declares it can do, and the ``check`` it offers."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from certify.budget import Budget
from certify.encode import encodable
from certify.errors import SolverUnavailable
from certify.problem import Problem
from certify.verdict import Verdict

__all__ = ["Capabilities", "Engine", "Support", "check_modules", "require_modules", "supports_encoding", "supports_ops"]


@dataclass(frozen=True, slots=True)
class Support:
    """Whether an engine can take a problem, and if not, why."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine can conclude: ``proves`` (may answer HOLDS), ``falsifies`` (may answer
    VIOLATED), ``complete`` (decides some class of problems given time: which ones,
    :meth:`Engine.complete_for` says), the ops it has rules for and the pip extra that installs
    its optional dependency.  The portfolio holds engines to them: a HOLDS from an engine that
    does not prove, or a VIOLATED from one that does not falsify, is withdrawn as a bug."""

    proves: bool
    falsifies: bool
    complete: bool
    ops: frozenset[str]
    extra: str = ""  # the pip extra that installs the engine's optional dependency


@runtime_checkable
class Engine(Protocol):
    name: str
    capabilities: Capabilities

    def available(self) -> Support:
        """Whether the engine's optional dependencies are installed."""
        ...

    def supports(self, problem: Problem) -> Support:
        ...

    def complete_for(self, problem: Problem) -> bool:
        """Whether, given enough time, the engine decides ``problem`` (never UNKNOWN)."""
        ...

    def check(self, problem: Problem, budget: Budget) -> Verdict:
        ...


def supports_ops(engine_name: str, ops: frozenset[str], problem: Problem) -> Support:
    """Shared helper: a problem is supported when every op of its network is in ``ops``."""
    missing = sorted(op.value for op in problem.network.ops() if op.value not in ops)
    if "opaque" in missing:  # a model that was not converted: say why
        reason = next(n.attrs.get("reason", "") for n in problem.network.nodes if n.op.value == "opaque")
        return Support(False, f"{engine_name} needs a converted model ({reason})")
    if missing:
        return Support(False, f"{engine_name} has no rule for op(s) {', '.join(missing)}")
    return Support(True)


def check_modules(modules: tuple[tuple[str, str], ...], extra: str) -> Support:
    """Support(True) when every module imports, else why not and which extra installs it."""
    for module, package in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            return Support(False, f"{package} is not installed: pip install 'certify[{extra}]'")
    return Support(True)


def require_modules(engine: str, modules: tuple[tuple[str, str], ...], extra: str) -> None:
    """Raise :class:`SolverUnavailable` when one of ``modules`` cannot be imported."""
    for module, package in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise SolverUnavailable(engine, package, extra) from None


def supports_encoding(engine: str, problem: Problem) -> Support:
    missing = encodable(problem)
    if missing:
        return Support(False, f"{engine} has no exact linear encoding for op(s) {', '.join(missing)}")
    return Support(True)
