"""Runs engines cheapest-first under one budget, following a named preset from ``solvers/``.

A preset is YAML::

    name: default
    description: ...
    stages:
      - engine: fuzz
        share: 0.1          # fraction of the remaining time (optional; default: all of it)
        max_seconds: 2      # and at most this long (optional)
        options: {steps: 50}

The first HOLDS ends the run; a VIOLATED ends it only if its counterexample replays in
onnxruntime (through the instance's oracle) - otherwise the failed replay is logged as a bug
and the next stage runs.  The replay is in float32, or in float64 on a float64 copy of the
model where the box holds no float32 point (see :mod:`certify.replay`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from certify.budget import Budget
from certify.engines.base import Engine
from certify.engines.registry import ENGINES, EngineEntry, make_engine
from certify.errors import UsageError
from certify.instance import Instance
from certify.numeric import vouch
from certify.problem import Problem
from certify.replay import replay
from certify.verdict import Status, Verdict, unknown

log = logging.getLogger(__name__)

#: Where the bundled presets live (the repository's top-level ``solvers/`` folder).
SOLVERS_DIR = Path(__file__).resolve().parents[1] / "solvers"


@dataclass(frozen=True, slots=True)
class Stage:
    engine: str
    share: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    max_seconds: float | None = None

    def budget(self, budget: Budget, last: bool) -> Budget:
        """This stage's slice of ``budget``: its share of the remaining time, capped by
        ``max_seconds``; the last stage gets everything that is left."""
        if last:
            return budget
        seconds = max(0.0, budget.remaining)
        if self.share is not None:
            seconds *= self.share
        if self.max_seconds is not None:
            seconds = min(seconds, self.max_seconds)
        return budget.at_most(seconds)


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    stages: tuple[Stage, ...]
    description: str = ""


def preset_names() -> list[str]:
    return sorted(p.stem for p in SOLVERS_DIR.glob("*.yaml"))


def load_preset(name_or_path: str | Path) -> Preset:
    """A bundled preset by name (``default``, ``complete``...) or a preset YAML file."""
    path = Path(name_or_path)
    if not path.is_file():
        path = SOLVERS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UsageError(f"unknown solver preset {str(name_or_path)!r}; "
                             f"bundled presets: {', '.join(preset_names())}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("stages"), list) or not data["stages"]:
        raise UsageError(f"{path}: a preset needs a non-empty 'stages' list")
    stages = tuple(_stage(path, k, s) for k, s in enumerate(data["stages"]))
    return Preset(str(data.get("name", path.stem)), stages, str(data.get("description", "")))


def _stage(path: Path, k: int, s: Any) -> Stage:
    """Stage ``k`` of the preset at ``path``, checked now: its fields, and its engine's options
    against that engine's option type (so a bad option fails when the preset loads, with one
    line, not when the stage runs)."""
    where = f"{path}: stages[{k}]"
    if not isinstance(s, dict) or "engine" not in s:
        raise UsageError(f"{where} needs an 'engine'")
    unknown_keys = set(s) - {"engine", "share", "options", "max_seconds"}
    if unknown_keys:
        raise UsageError(f"{where}: unknown field(s) {sorted(unknown_keys)}")
    share, cap = _number(s.get("share"), f"{where}.share"), _number(s.get("max_seconds"), f"{where}.max_seconds")
    if share is not None and not 0 < share <= 1:
        raise UsageError(f"{where}.share must be in (0, 1]")
    if cap is not None and not cap > 0:
        raise UsageError(f"{where}.max_seconds must be > 0")
    options = s.get("options") or {}
    if not isinstance(options, dict):
        raise UsageError(f"{where}.options must be a mapping of option names to values")
    engine = str(s["engine"])
    try:
        make_engine(engine, options)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    return Stage(engine, share, dict(options), cap)


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{where} must be a finite number, not {value!r}")
    return float(value)


def single_engine(name: str, options: Mapping[str, Any] | None = None) -> Preset:
    return Preset(name, (Stage(name, None, dict(options or {})),), f"only {name}")


def run_portfolio(instance: Instance, preset: Preset, budget: Budget,
                  registry: Mapping[str, EngineEntry] = ENGINES) -> Verdict:
    """Try the preset's stages in order on one instance; the verdict's seconds cover all of them."""
    start = time.monotonic()
    reasons: list[str] = []
    problem = instance.problem
    for k, stage in enumerate(preset.stages):
        if budget.expired:
            reasons.append("timeout")
            break
        engine = make_engine(stage.engine, stage.options, registry)
        avail = engine.available()
        if not avail:
            reasons.append(f"{stage.engine}: unavailable ({avail.reason})")
            continue
        sup = engine.supports(problem)
        if not sup:
            reasons.append(f"{stage.engine}: {sup.reason}")
            continue
        verdict = vouch(problem, engine.check(problem, stage.budget(budget, last=k == len(preset.stages) - 1)))
        verdict = _within_capabilities(engine, verdict)
        if verdict.status is Status.HOLDS:
            return verdict.with_time(time.monotonic() - start)
        if verdict.status is Status.VIOLATED:
            checked = _replayed(instance, verdict)
            if checked is not None:
                return checked.with_time(time.monotonic() - start)
            if instance.exact:
                reasons.append(f"{stage.engine}: counterexample did not replay in onnxruntime{_replay_note(problem)}")
            else:
                reasons.append(f"{stage.engine}: counterexample of the over-approximation is not a member "
                               "of the property")
            continue
        reasons.append(f"{stage.engine}: {verdict.reason}")
    return unknown(preset.name, "; ".join(reasons) or "no stage ran", time.monotonic() - start)


def _within_capabilities(engine: Engine, verdict: Verdict) -> Verdict:
    """``verdict``, unless it claims what the engine declared it cannot conclude: a HOLDS from an
    engine that does not prove or a VIOLATED from one that does not falsify becomes UNKNOWN,
    logged as a bug."""
    caps = engine.capabilities
    if (verdict.status is Status.HOLDS and not caps.proves) or (verdict.status is Status.VIOLATED
                                                              and not caps.falsifies):
        log.error("BUG: engine %s answered %s, which it declares it cannot", engine.name, verdict.status.value)
        return replace(verdict, status=Status.UNKNOWN, counterexample=None, certificate=None, proof=None,
                       reason=f"{engine.name} answered {verdict.status.value} against its declared capabilities "
                              f"(logged as a bug)")
    return verdict


def _replayed(instance: Instance, verdict: Verdict) -> Verdict | None:
    cex = verdict.counterexample
    if cex is None:
        log.error("BUG: engine %s said violated without a counterexample", verdict.engine)
        return None
    # Always replay here, even if the engine says it did: the portfolio is the last gate.
    checked = replay(instance.oracle, instance.problem, cex.x)
    if checked is None:
        if instance.exact and instance.problem.box.holds_float32_point:
            log.error("BUG: counterexample from %s for %s does not replay in onnxruntime",
                      verdict.engine, instance.problem.name or "problem")
        elif instance.exact:  # the float64 copy may not load (no double kernel): replay logged why
            log.warning("counterexample from %s for %s does not replay on the float64 copy in onnxruntime",
                        verdict.engine, instance.problem.name or "problem")
        return None
    assert checked.replayed
    return replace(verdict, counterexample=checked)


def _replay_note(problem: Problem) -> str:
    """How a failed replay ran: on the model itself (a bug), or on its float64 copy (the box
    holds no float32 point; the copy may also fail to load, which is logged, not a bug)."""
    if problem.box.holds_float32_point:
        return " (logged as a bug)"
    return " (float64 copy: the box holds no float32 point; logged)"
