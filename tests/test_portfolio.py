"""The portfolio is the last gate: VIOLATED only with a counterexample that replays in onnxruntime."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from certify.budget import Budget
from certify.engines.base import Capabilities, Support
from certify.engines.registry import EngineEntry, register
from certify.instance import Instance
from certify.io.onnx import load_onnx
from certify.portfolio import Preset, Stage, load_preset, run_portfolio
from certify.problem import Box, HalfSpaces, Problem
from certify.replay import OnnxOracle
from certify.verdict import Counterexample, Status, Verdict
from tests.zoo import dense, export


class LyingEngine:
    """Says VIOLATED at the point its options name (replayed=True, to tempt the gate), or, with
    ``status: holds``, HOLDS; its capabilities are the ones the options declare."""

    name = "liar"

    def __init__(self, x: np.ndarray, status: Status, proves: bool, falsifies: bool) -> None:
        self.x, self.status = x, status
        self.capabilities = Capabilities(proves=proves, falsifies=falsifies, complete=False, ops=frozenset())

    def available(self) -> Support:
        return Support(True)

    def supports(self, problem: Problem) -> Support:
        return Support(True)

    def complete_for(self, problem: Problem) -> bool:
        return False

    def check(self, problem: Problem, budget: Budget) -> Verdict:
        if self.status is Status.HOLDS:
            return Verdict(Status.HOLDS, "liar")
        return Verdict(Status.VIOLATED, "liar", counterexample=Counterexample(self.x, np.zeros(2), replayed=True))


def make_liar(options: Mapping[str, Any]) -> LyingEngine:
    return LyingEngine(np.asarray(options.get("x", [0.0, 0.0]), dtype=np.float64),
                       Status(options.get("status", "violated")), bool(options.get("proves", False)),
                       bool(options.get("falsifies", True)))


REGISTRY = register(EngineEntry("liar", "tests.test_portfolio:make_liar", "test engine"))
PRESET = Preset("liar-only", (Stage("liar", options={"x": [0.0, 0.0]}),))


@pytest.fixture()
def instance(tmp_path: Path) -> Instance:
    path = export(dense(1, [2, 6, 2]), (2,), tmp_path / "m.onnx")
    net = load_onnx(path)
    oracle = OnnxOracle(path)
    y = oracle.run(np.zeros(2))
    # unsafe: y0 - y1 <= y0(0) - y1(0) - 1000: no point near 0 reaches it
    unsafe = HalfSpaces(np.array([[1.0, -1.0]]), np.array([y[0] - y[1] - 1000.0]))
    problem = Problem(net, Box(np.full(2, -0.1), np.full(2, 0.1)), (unsafe,))
    return Instance(problem, oracle)


@pytest.mark.parametrize("exact", [True, False])
def test_a_counterexample_that_does_not_replay_is_never_violated(instance: Instance, exact: bool) -> None:
    inst = Instance(instance.problem, instance.oracle, exact=exact)
    verdict = run_portfolio(inst, PRESET, Budget.seconds(5), REGISTRY)
    assert verdict.status is Status.UNKNOWN
    assert verdict.counterexample is None


def test_a_real_violation_comes_back_replayed(instance: Instance) -> None:
    y = instance.oracle.run(np.zeros(2))
    unsafe = HalfSpaces(np.array([[1.0, -1.0]]), np.array([y[0] - y[1] + 1.0]))  # true at x = 0
    problem = Problem(instance.problem.network, instance.problem.box, (unsafe,))
    verdict = run_portfolio(Instance(problem, instance.oracle), PRESET, Budget.seconds(5), REGISTRY)
    assert verdict.status is Status.VIOLATED
    assert verdict.counterexample is not None and verdict.counterexample.replayed
    assert problem.violation(instance.oracle.run(verdict.counterexample.x)) <= 0


def test_bundled_presets_load() -> None:
    for name in ("default", "fast", "complete", "exact", "vnncomp"):
        preset = load_preset(name)
        assert preset.stages and all(s.engine for s in preset.stages)


@pytest.mark.parametrize(("options", "claimed"), [
    ({"status": "holds", "proves": False}, "holds"),  # HOLDS from an engine that does not prove
    ({"x": [0.0, 0.0], "falsifies": False}, "violated"),  # VIOLATED from one that does not falsify
])
def test_answers_outside_declared_capabilities_are_withdrawn(instance: Instance, options: dict, claimed: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    y = instance.oracle.run(np.zeros(2))
    unsafe = HalfSpaces(np.array([[1.0, -1.0]]), np.array([y[0] - y[1] + 1.0]))  # a real violation at 0
    problem = Problem(instance.problem.network, instance.problem.box, (unsafe,))
    with caplog.at_level("ERROR"):
        verdict = run_portfolio(Instance(problem, instance.oracle), Preset("p", (Stage("liar", options=options),)),
                                Budget.seconds(5), REGISTRY)
    assert verdict.status is Status.UNKNOWN and f"answered {claimed}" in verdict.reason
    assert any("BUG" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("stage", "message"), [
    ("{engine: bab, options: {mode: sideways}}", "bab.mode: 'sideways' is not one of"),
    ("{engine: bab, options: {neuron: {batchsize: 3}}}", "bab.neuron: unknown option(s) batchsize"),
    ("{engine: crown, options: {iterations: many}}", "crown.iterations: 'many' is not an integer"),
    ("{engine: fuzz, options: {batchsize: 3}}", "unknown fuzz option(s) batchsize"),
    ("{engine: nosuch}", "unknown engine 'nosuch'"),
    ("{engine: crown, share: lots}", "share must be a finite number"),
    ("{engine: crown, options: [1, 2]}", "options must be a mapping"),
])
def test_presets_are_checked_when_loaded(tmp_path: Path, stage: str, message: str) -> None:
    from certify.errors import UsageError

    path = tmp_path / "p.yaml"
    path.write_text(f"name: p\nstages:\n  - {stage}\n")
    with pytest.raises(UsageError) as info:
        load_preset(path)
    assert message in str(info.value) and "\n" not in str(info.value)
