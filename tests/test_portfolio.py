"""The portfolio is the last gate: VIOLATED only with a counterexample that replays in onnxruntime."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from certify.engines.base import Budget, Capabilities, Support
from certify.engines.registry import EngineEntry, register
from certify.instance import Instance
from certify.io.onnx import load_onnx
from certify.portfolio import Preset, Stage, load_preset, run_portfolio
from certify.problem import Box, HalfSpaces, Problem
from certify.replay import OnnxOracle
from certify.verdict import Counterexample, Status, Verdict
from tests.zoo import dense, export

ANSWER: dict[str, Any] = {}


class LyingEngine:
    """Says VIOLATED with whatever point the test put in ANSWER (replayed=True, to tempt the gate)."""

    name = "liar"
    capabilities = Capabilities(proves=False, falsifies=True, complete=False, ops=frozenset())

    def available(self) -> Support:
        return Support(True)

    def supports(self, problem: Problem) -> Support:
        return Support(True)

    def check(self, problem: Problem, budget: Budget) -> Verdict:
        x = ANSWER["x"]
        return Verdict(Status.VIOLATED, "liar", counterexample=Counterexample(x, np.zeros(2), replayed=True))


def make_liar(options: Mapping[str, Any]) -> LyingEngine:
    return LyingEngine()


REGISTRY = register(EngineEntry("liar", "tests.test_portfolio:make_liar", "test engine"))
PRESET = Preset("liar-only", (Stage("liar"),))


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
    ANSWER["x"] = np.zeros(2)
    inst = Instance(instance.problem, instance.oracle, exact=exact)
    verdict = run_portfolio(inst, PRESET, Budget.seconds(5), REGISTRY)
    assert verdict.status is Status.UNKNOWN
    assert verdict.counterexample is None


def test_a_real_violation_comes_back_replayed(instance: Instance) -> None:
    ANSWER["x"] = np.zeros(2)
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
