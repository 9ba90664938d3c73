"""Every registered engine against the same problems with exact ground truth.

The engine list is built from :data:`certify.engines.registry.ENGINES`: an engine whose module
does not import yet (or whose optional dependency is missing) is left out, not skipped.
Complete engines must agree with the ground truth on every verdict they decide (``milp``, the
referee, must decide every case); incomplete ones may say UNKNOWN but never contradict.
Every VIOLATED verdict's counterexample must lie in the box and violate the property under an
independent float64 forward pass.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from certify.engines.base import Budget, Engine
from certify.engines.registry import ENGINES, make_engine
from certify.verdict import Status
from tests.conformance.problems import Case, forward, make_cases

#: Cases in CI; benchmarks/conformance.py runs 500.
N_CASES = int(os.environ.get("CERTIFY_CONFORMANCE_CASES", "24"))
#: Seconds per (engine, case); the exact SMT engine may time out (UNKNOWN) on the bigger nets.
SECONDS = {"smt": 5.0, "fuzz": 2.0}
DEFAULT_SECONDS = 30.0
OURS = {"lp", "multineuron", "milp", "smt", "ibp", "crown", "alpha-crown"}


def importable_engines() -> dict[str, Engine]:
    """Every registered engine whose module imports and whose dependencies are installed."""
    out: dict[str, Engine] = {}
    for name in ENGINES:
        try:
            engine = make_engine(name)
        except ImportError:  # module not written yet (e.g. during development)
            continue
        if engine.available():
            out[name] = engine
    return out


ENGINE_NAMES = sorted(importable_engines())


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    torch.set_num_threads(1)
    return make_cases(N_CASES, seed=1000)


def test_engine_list_contains_ours() -> None:
    assert OURS <= set(ENGINE_NAMES)


def test_cases_are_balanced(cases: list[Case]) -> None:
    statuses = {c.expected for c in cases}
    assert statuses == {Status.HOLDS, Status.VIOLATED}
    assert any(c.truth_source == "brute-force" for c in cases)
    assert all(min(abs(m) for m in c.margins) > 0 for c in cases)


def check_counterexample(case: Case, x: np.ndarray) -> None:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    assert case.problem.box.contains(x)
    y = forward(case.layers, x[None])[0]
    assert case.problem.violation(y) <= 1e-9


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_engine_conforms(name: str, cases: list[Case]) -> None:
    torch.set_num_threads(1)
    engine = importable_engines()[name]
    complete = engine.capabilities.complete
    decided = 0
    for case in cases:
        if not engine.supports(case.problem):
            continue
        verdict = engine.check(case.problem, Budget.seconds(SECONDS.get(name, DEFAULT_SECONDS)))
        if verdict.status is Status.UNKNOWN:
            assert not (name == "milp"), f"milp must decide {case.problem.name}: {verdict.reason}"
            continue
        decided += 1
        assert verdict.status is case.expected, (
            f"{name} says {verdict.status.value} on {case.problem.name}, truth is {case.expected.value} "
            f"(margins {case.margins}, {case.truth_source})")
        if verdict.status is Status.VIOLATED:
            assert verdict.counterexample is not None
            check_counterexample(case, verdict.counterexample.x)
        if verdict.status is Status.HOLDS:
            assert engine.capabilities.proves
    if complete:
        assert decided > 0, f"complete engine {name} decided none of {len(cases)} cases"


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_no_engine_proves_a_property_whose_values_overflow_float32(name: str) -> None:
    """The extreme-magnitude family: boxes near float32's largest value, weights, biases and
    right-hand sides near overflow.  HOLDS is never the answer there; a VIOLATED one lies in
    the box and violates under a float64 forward pass (onnxruntime's replay is the portfolio's
    job, tested in tests/test_numeric.py)."""
    from tests.conformance.problems import EXTREME_KINDS, extreme_case

    torch.set_num_threads(1)
    engine = importable_engines()[name]
    for seed in range(2):
        for kind in EXTREME_KINDS:
            problem = extreme_case(seed, kind)
            if not engine.supports(problem):
                continue
            verdict = engine.check(problem, Budget.seconds(1.0))
            assert verdict.status is not Status.HOLDS, f"{name} proved {problem.name}"
            if verdict.status is Status.VIOLATED:
                x = np.asarray(verdict.counterexample.x, dtype=np.float64)
                assert problem.box.contains(x)
                with torch.no_grad():
                    y = problem.network.to(dtype=torch.float64)(torch.as_tensor(x)[None])[0].numpy()
                assert problem.violation(y) <= 1e-9 * (1 + np.abs(y).max()), (name, problem.name)
