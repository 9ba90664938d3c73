"""Every engine by name.  Engines are created from a name and an options mapping; their
modules (and optional dependencies) are imported only when an engine is asked for."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from certify.engines.base import Engine
from certify.errors import UsageError


@dataclass(frozen=True, slots=True)
class EngineEntry:
    name: str
    factory: str  # "module:callable"; callable(options: Mapping) -> Engine
    summary: str


ENGINES: dict[str, EngineEntry] = {e.name: e for e in (
    EngineEntry("fuzz", "certify.engines.fuzz:make_engine",
                "batched falsifier: random, corner and PGD search on the property margin"),
    EngineEntry("sample", "certify.engines.sample:make_engine",
                "black-box search in onnxruntime, for models certify could not convert"),
    EngineEntry("ibp", "certify.engines.registry:_ibp", "interval bound propagation (incomplete)"),
    EngineEntry("crown", "certify.engines.registry:_crown", "CROWN linear bound propagation (incomplete)"),
    EngineEntry("alpha-crown", "certify.engines.registry:_alpha_crown",
                "CROWN with optimized ReLU lower slopes (incomplete)"),
    EngineEntry("bab", "certify.engines.bab:make_engine",
                "branch and bound over input or ReLU splits with batched alpha-CROWN (complete for PL nets)"),
    EngineEntry("lp", "certify.engines.lp:make_engine", "LP with the triangle ReLU relaxation (cvxpy)"),
    EngineEntry("multineuron", "certify.engines.multineuron:make_engine",
                "LP plus PRIMA-style multi-neuron convex-hull cuts (cvxpy)"),
    EngineEntry("milp", "certify.engines.milp:make_engine", "exact big-M MILP (cvxpy + HiGHS)"),
    EngineEntry("smt", "certify.engines.smt:make_engine", "exact SMT in QF_LRA (pysmt + z3)"),
)}


def _ibp(options: Mapping[str, Any]) -> Engine:
    from certify.engines.bound import BoundEngine
    return BoundEngine.from_options("ibp", options)


def _crown(options: Mapping[str, Any]) -> Engine:
    from certify.engines.bound import BoundEngine
    return BoundEngine.from_options("crown", options)


def _alpha_crown(options: Mapping[str, Any]) -> Engine:
    from certify.engines.bound import BoundEngine
    return BoundEngine.from_options("alpha-crown", options)


def register(entry: EngineEntry) -> dict[str, EngineEntry]:
    """A new registry with ``entry`` added (the module-level table is never mutated)."""
    return {**ENGINES, entry.name: entry}


def make_engine(name: str, options: Mapping[str, Any] | None = None,
                registry: Mapping[str, EngineEntry] = ENGINES) -> Engine:
    if name not in registry:
        raise UsageError(f"unknown engine {name!r}; known engines: {', '.join(sorted(registry))}")
    module, attr = registry[name].factory.split(":")
    factory = getattr(importlib.import_module(module), attr)
    try:
        return factory(dict(options or {}))
    except TypeError as exc:
        raise UsageError(f"bad options for engine {name!r}: {exc}") from None
