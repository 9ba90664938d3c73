"""The engine contract (the budget lives in :mod:`certify.budget`; re-exported here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from certify.budget import Budget, OutOfTime
from certify.problem import Problem
from certify.verdict import Verdict

__all__ = ["Budget", "Capabilities", "Engine", "OutOfTime", "Support", "supports_ops"]


@dataclass(frozen=True, slots=True)
class Support:
    """Whether an engine can take a problem, and if not, why."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine can conclude: ``complete`` engines decide every supported problem."""

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
