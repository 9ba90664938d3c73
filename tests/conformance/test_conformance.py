"""Every registered engine against the same problems with exact ground truth.

Every entry of :data:`certify.engines.registry.ENGINES` is built and run: an engine whose module
does not import, or whose optional dependency is missing, fails (CI installs the dev extras).
:func:`conformance_failures` lists what an engine did wrong on the cases; it must be empty:

* a verdict that contradicts the ground truth;
* a VIOLATED whose counterexample lies outside the box or does not violate the property under an
  independent float64 forward pass;
* a HOLDS from an engine whose capabilities say it does not prove, a VIOLATED from one that
  does not falsify;
* an UNKNOWN on a problem the engine says it is complete for (``complete_for``);
* an engine that supports none of the cases, that proves (``proves``) none of the holding cases
  it supports, or that falsifies (``falsifies``) none of the violated ones: each engine must
  decide at least the cases its capabilities promise.

The cases: ``N_CASES`` random ReLU problems (:mod:`tests.conformance.problems`), ``N_EASY`` easy
ones (tiny nets, narrow boxes, wide margins: even interval arithmetic proves some), and a few of
the random ones again as *opaque* networks (written to ONNX and run whole in onnxruntime), which
only ``sample`` supports.  Planted engines that cheat show that the conformance catches them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from certify.budget import Budget
from certify.engines.base import Capabilities, Engine, Support
from certify.engines.registry import ENGINES, make_engine
from certify.problem import Problem
from certify.verdict import Counterexample, Status, Verdict, unknown
from tests.conformance.problems import Case, forward, make_cases

#: Cases in CI; benchmarks/conformance.py runs 500.
N_CASES = int(os.environ.get("CERTIFY_CONFORMANCE_CASES", "24"))
#: Easy cases (tiny nets on narrow boxes) after the random ones.
N_EASY = 4
#: Random cases also run as opaque networks (for ``sample``): this many holding and violated each.
N_OPAQUE = 3
#: Seconds per (engine, case); the exact SMT engine may time out (UNKNOWN) on the bigger nets.
SECONDS = {"smt": 5.0, "fuzz": 2.0, "sample": 2.0}
DEFAULT_SECONDS = 30.0
OURS = {"lp", "multineuron", "milp", "smt", "ibp", "crown", "alpha-crown", "bab", "fuzz", "sample"}

#: What an UNKNOWN's reason says when time ran out.
TIMEOUT_REASONS = ("timeout", "ran out of time")
#: UNKNOWN reasons accepted on problems an engine is complete for.  smt (exact arithmetic in
#: z3, 5 s a case) may run out of time on the bigger nets: its timeouts are accepted (the rule
#: that it decides some holding and some violated cases still applies).
#: smt may run out of time (exact arithmetic on the bigger nets); nothing else excuses an UNKNOWN.
ACCEPTED_UNKNOWN: dict[str, tuple[str, ...]] = {"smt": TIMEOUT_REASONS}


# ----------------------------------------------------------------------------- the rules


def counterexample_failure(case: Case, cex: Counterexample | None) -> str | None:
    """Why ``cex`` is not a counterexample of ``case`` (None if it is): it must lie in the box and
    violate the property under the float64 forward pass of the case's layers."""
    if cex is None:
        return "no counterexample"
    x = np.asarray(cex.x, dtype=np.float64).reshape(-1)
    if not case.problem.box.contains(x):
        return "counterexample outside the box"
    violation = case.problem.violation(forward(case.layers, x[None])[0])
    if violation > 1e-9:
        return f"counterexample does not violate (margin {violation:.3g} in float64)"
    return None


def conformance_failures(engine: Engine, cases: list[Case], seconds: float,
                         accepted_unknown: tuple[str, ...] = ()) -> list[str]:
    """Everything ``engine`` does wrong on ``cases`` (``seconds`` each), one message per failure
    (empty: it conforms).  ``accepted_unknown``: substrings of UNKNOWN reasons accepted on
    problems the engine is complete for."""
    caps = engine.capabilities
    failures: list[str] = []
    supported = {Status.HOLDS: 0, Status.VIOLATED: 0}
    decided = {Status.HOLDS: 0, Status.VIOLATED: 0}
    for case in cases:
        problem = case.problem
        if not engine.supports(problem):
            continue
        supported[case.expected] += 1
        verdict = engine.check(problem, Budget.seconds(seconds))
        where = (f"{engine.name} on {problem.name} (truth {case.expected.value}, margins "
                 f"{[round(m, 4) for m in case.margins]}, {case.truth_source})")
        if verdict.status is Status.UNKNOWN:
            if engine.complete_for(problem) and not any(r in verdict.reason for r in accepted_unknown):
                failures.append(f"{where}: UNKNOWN on a problem it is complete for: {verdict.reason}")
            continue
        if verdict.status is not case.expected:
            failures.append(f"{where}: says {verdict.status.value}, contradicting the truth")
            continue
        decided[verdict.status] += 1
        if verdict.status is Status.HOLDS and not caps.proves:
            failures.append(f"{where}: HOLDS from an engine that does not prove")
        if verdict.status is Status.VIOLATED:
            if not caps.falsifies:
                failures.append(f"{where}: VIOLATED from an engine that does not falsify")
            why = counterexample_failure(case, verdict.counterexample)
            if why is not None:
                failures.append(f"{where}: {why}")
    if not any(supported.values()):
        failures.append(f"{engine.name} supports none of the {len(cases)} cases")
    if caps.proves and supported[Status.HOLDS] and not decided[Status.HOLDS]:
        failures.append(f"{engine.name} proves, but proved none of the {supported[Status.HOLDS]} holding cases "
                        "it supports")
    if caps.falsifies and supported[Status.VIOLATED] and not decided[Status.VIOLATED]:
        failures.append(f"{engine.name} falsifies, but falsified none of the {supported[Status.VIOLATED]} "
                        "violated cases it supports")
    return failures


# ----------------------------------------------------------------------------- the cases


def opaque_case(case: Case, folder: Path) -> Case:
    """``case`` with its network written to ONNX and kept whole (an ``opaque`` network)."""
    from certify.io.onnx.opaque import opaque_network
    from certify.io.onnx_writer import save_onnx

    name = f"{case.problem.name}-opaque"
    path = save_onnx(case.problem.network, folder / f"{name}.onnx")
    net = opaque_network(path.read_bytes(), name, "planted by the conformance suite")
    problem = Problem(net, case.problem.box, case.problem.unsafe, name=name)
    return dataclasses.replace(case, problem=problem)


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    torch.set_num_threads(1)
    return make_cases(N_CASES, seed=1000)


@pytest.fixture(scope="module")
def all_cases(cases: list[Case], tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    """The random cases, the easy ones and the opaque ones."""
    folder = tmp_path_factory.mktemp("opaque")
    opaque = [opaque_case(c, folder) for status in (Status.HOLDS, Status.VIOLATED)
              for c in [c for c in cases if c.expected is status][:N_OPAQUE]]
    return [*cases, *make_cases(N_EASY, seed=2000, easy=True), *opaque]


ENGINE_NAMES = sorted(ENGINES)


def test_every_registered_engine_is_built_and_available() -> None:
    assert OURS <= set(ENGINES)
    for name in ENGINES:
        engine = make_engine(name)  # an ImportError fails here
        assert engine.name == name
        support = engine.available()
        assert support, f"{name} is not available: {support.reason}"


def test_cases_are_balanced(cases: list[Case], all_cases: list[Case]) -> None:
    statuses = {c.expected for c in cases}
    assert statuses == {Status.HOLDS, Status.VIOLATED}
    assert any(c.truth_source == "brute-force" for c in cases)
    assert all(min(abs(m) for m in c.margins) > 0 for c in cases)
    easy = all_cases[len(cases):len(cases) + N_EASY]
    opaque = [c for c in all_cases if c.problem.network.is_opaque]
    assert {c.expected for c in easy} == {c.expected for c in opaque} == {Status.HOLDS, Status.VIOLATED}
    assert len(opaque) == 2 * N_OPAQUE


def test_referees_agree_on_brute_force_cases(cases: list[Case]) -> None:
    """The two independent exact solvers (region enumeration and scipy's big-M MILP) agree."""
    from tests.conformance.problems import brute_force_margin
    from tests.referee import milp_minimum

    compared = 0
    for case in cases[:8]:
        if case.truth_source != "brute-force":
            continue
        for hs, margin in zip(case.problem.unsafe, case.margins):
            exact = brute_force_margin(case.layers, case.problem.box, hs)
            by_milp = milp_minimum([(w.T, b) for w, b in case.layers], case.problem.box.lower,
                                   case.problem.box.upper, hs.A, hs.b)
            assert by_milp == pytest.approx(exact, abs=1e-6), case.problem.name
            assert exact == pytest.approx(margin, abs=1e-5), case.problem.name
            compared += 1
    assert compared >= 4


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_engine_conforms(name: str, all_cases: list[Case]) -> None:
    torch.set_num_threads(1)
    engine = make_engine(name)
    assert engine.available(), engine.available().reason
    failures = conformance_failures(engine, all_cases, SECONDS.get(name, DEFAULT_SECONDS),
                                    ACCEPTED_UNKNOWN.get(name, ()))
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------- planted cheats


class Planted:
    """An engine that declares what a real engine declares (capabilities, supports,
    complete_for) and answers from the ground truth of the cases, as a subclass cheats."""

    def __init__(self, real: Engine, cases: list[Case], capabilities: Capabilities | None = None) -> None:
        self.name = f"planted-{real.name}"
        self.capabilities = capabilities or real.capabilities
        self.real = real
        self.truth = {c.problem.name: c for c in cases}

    def available(self) -> Support:
        return Support(True)

    def supports(self, problem: Problem) -> Support:
        return self.real.supports(problem)

    def complete_for(self, problem: Problem) -> bool:
        return self.real.complete_for(problem)


class Lazy(Planted):
    """Says UNKNOWN to everything, with ``reason``."""

    reason = "inconclusive"

    def check(self, problem: Problem, budget: Budget) -> Verdict:
        return unknown(self.name, self.reason)


class LazyTimeout(Lazy):
    """Says it ran out of time, every time (as smt may honestly say)."""

    reason = "z3 answered unknown or ran out of time"


class ProvesWithoutProving(Planted):
    """Knows the truth: HOLDS on the holding cases, though its capabilities say it does not prove."""

    def check(self, problem: Problem, budget: Budget) -> Verdict:
        if self.truth[problem.name].expected is Status.HOLDS:
            return Verdict(Status.HOLDS, engine=self.name)
        return unknown(self.name, "no counterexample found")


class Contrarian(Planted):
    """Says the opposite of the truth (with the box's centre as counterexample)."""

    def check(self, problem: Problem, budget: Budget) -> Verdict:
        if self.truth[problem.name].expected is Status.HOLDS:
            centre = (problem.box.lower + problem.box.upper) / 2
            return Verdict(Status.VIOLATED, engine=self.name, counterexample=Counterexample(centre, np.zeros(1)))
        return Verdict(Status.HOLDS, engine=self.name)


class BadCounterexample(Planted):
    """Right verdicts, but a counterexample just outside the box (``outside``) or at the input
    that satisfies the property best (``safe``, found by sampling)."""

    def __init__(self, real: Engine, cases: list[Case], where: str) -> None:
        super().__init__(real, cases)
        self.where = where

    def check(self, problem: Problem, budget: Budget) -> Verdict:
        case = self.truth[problem.name]
        if case.expected is Status.HOLDS:
            return Verdict(Status.HOLDS, engine=self.name)
        lo, hi = problem.box.lower, problem.box.upper
        if self.where == "outside":
            x = hi + 1e-3 * (hi - lo)
        else:
            xs = np.random.default_rng(0).uniform(lo, hi, size=(512, lo.size))
            ys = forward(case.layers, xs)
            x = xs[int(np.argmax([problem.violation(y) for y in ys]))]
        return Verdict(Status.VIOLATED, engine=self.name, counterexample=Counterexample(x, np.zeros(1)))


def _planted(kind: str, cases: list[Case]) -> tuple[Engine, tuple[str, ...]]:
    """A cheat and the UNKNOWN reasons its real engine is allowed."""
    if kind == "lazy-crown":
        return Lazy(make_engine("crown"), cases), ()
    if kind == "lazy-milp":
        return Lazy(make_engine("milp"), cases), ()
    if kind == "lazy-smt-timeouts":
        return LazyTimeout(make_engine("smt"), cases), ACCEPTED_UNKNOWN["smt"]
    if kind == "lazy-sample":
        return Lazy(make_engine("sample"), cases), ()
    if kind == "proves-without-proving":
        fuzz = make_engine("fuzz")
        return ProvesWithoutProving(fuzz, cases, dataclasses.replace(fuzz.capabilities, proves=False)), ()
    if kind == "contrarian":
        return Contrarian(make_engine("milp"), cases), ()
    return BadCounterexample(make_engine("milp"), cases, kind.removeprefix("cex-")), ()


#: Each cheat, and the failure (a substring of its message) the conformance must report.
CHEATS = {
    "lazy-crown": "proved none of the",
    "lazy-milp": "UNKNOWN on a problem it is complete for",
    "lazy-smt-timeouts": "falsified none of the",
    "lazy-sample": "falsified none of the",
    "proves-without-proving": "HOLDS from an engine that does not prove",
    "contrarian": "contradicting the truth",
    "cex-outside": "counterexample outside the box",
    "cex-safe": "counterexample does not violate",
}


@pytest.mark.parametrize("kind", sorted(CHEATS))
def test_conformance_catches_a_cheat(kind: str, all_cases: list[Case]) -> None:
    engine, accepted = _planted(kind, all_cases)
    failures = conformance_failures(engine, all_cases, 1.0, accepted)
    assert any(CHEATS[kind] in f for f in failures), failures


def test_lazy_engines_fail_every_promise(all_cases: list[Case]) -> None:
    """An engine with milp's capabilities that never answers breaks all three promises: it is
    complete (no UNKNOWN), it proves and it falsifies."""
    failures = conformance_failures(Lazy(make_engine("milp"), all_cases), all_cases, 1.0)
    for needle in ("UNKNOWN on a problem it is complete for", "proved none of the", "falsified none of the"):
        assert any(needle in f for f in failures), (needle, failures)


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_no_engine_proves_a_property_whose_values_overflow_float32(name: str) -> None:
    """The extreme-magnitude family: boxes near float32's largest value, weights, biases and
    right-hand sides near overflow.  HOLDS is never the answer there; a VIOLATED one lies in
    the box and violates under a float64 forward pass (onnxruntime's replay is the portfolio's
    job, tested in tests/test_numeric.py)."""
    from tests.conformance.problems import EXTREME_KINDS, extreme_case

    torch.set_num_threads(1)
    engine = make_engine(name)
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
