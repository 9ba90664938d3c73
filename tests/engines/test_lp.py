"""The encoding and the LP-based engines: invariants on small nets, missing dependencies."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from certify.budget import Budget
from certify.encode import encodable, encode
from certify.engines.registry import make_engine
from certify.errors import SolverUnavailable
from certify.linprog import build_system, problem_bounds, relaxation_model, solve_disjuncts
from certify.network import Network, Node, Op
from certify.problem import Box, HalfSpaces, Problem
from certify.verdict import Status
from tests.conformance.problems import random_case, random_layers, relu_network


def _sampled_min(problem: Problem, n: int = 4000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    lo, hi = problem.box.lower, problem.box.upper
    x = rng.uniform(lo, hi, size=(n, *lo.shape))
    net = problem.network.to(dtype=torch.float64)
    with torch.no_grad():
        y = net.forward(torch.as_tensor(x)).reshape(n, -1).numpy()
    return min(problem.violation(row) for row in y)


def conv_problem() -> Problem:
    """input (1,4,4) -> conv 2x3x3 pad 1 -> relu -> maxpool 2 -> avgpool 1 -> reshape -> linear 3."""
    g = torch.Generator().manual_seed(3)
    nodes = (
        Node("x", Op.INPUT, (), (1, 4, 4)),
        Node("c", Op.CONV, ("x",), (2, 4, 4), {"weight": torch.randn(2, 1, 3, 3, generator=g) / 3,
                                                "bias": 0.1 * torch.randn(2, generator=g)},
             {"stride": (1, 1), "padding": (1, 1, 1, 1), "dilation": (1, 1), "groups": 1}),
        Node("r", Op.RELU, ("c",), (2, 4, 4)),
        Node("m", Op.MAXPOOL, ("r",), (2, 2, 2), attrs={"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0, 0, 0)}),
        Node("a", Op.AVGPOOL, ("m",), (2, 2, 2), attrs={"kernel": (1, 1), "stride": (1, 1), "padding": (0, 0, 0, 0),
                                                        "count_include_pad": True}),
        Node("f", Op.RESHAPE, ("a",), (8,), attrs={"shape": (8,)}),
        Node("o", Op.LINEAR, ("f",), (3,), {"weight": torch.randn(8, 3, generator=g),
                                            "bias": torch.zeros(3)}),
    )
    net = Network(nodes, "o")
    box = Box(np.full((1, 4, 4), -0.5), np.full((1, 4, 4), 0.5))
    return Problem(net, box, (HalfSpaces(np.array([[1.0, -1.0, 0.0]]), np.array([0.0])),))


def test_encoding_is_exact_at_milp_optimum() -> None:
    """The MILP optimum of a conv/maxpool/avgpool net is attained: its input reproduces the
    optimal value under network.forward, and no sampled point beats it."""
    from certify.engines.milp import milp_model

    problem = conv_problem()
    assert encodable(problem) == []
    system = build_system(problem)
    assert system.maxes
    (res,) = solve_disjuncts(milp_model(system), "highs", 1e18)
    x = res.x[system.inputs].reshape(system.input_shape)
    y = problem.network.to(dtype=torch.float64).forward(torch.as_tensor(x)[None])[0].numpy()
    assert problem.violation(y) == pytest.approx(res.value, abs=1e-5)
    assert res.value <= _sampled_min(problem) + 1e-6


@pytest.mark.parametrize("seed", [1, 2, 4, 5])
def test_lp_bound_is_below_every_sample(seed: int) -> None:
    case = random_case(seed)
    system = build_system(case.problem)
    results = solve_disjuncts(relaxation_model(system), "auto", 1e18)
    lp_margin = min(r.bound for r in results)
    assert lp_margin <= min(case.margins) + 1e-6
    assert lp_margin <= _sampled_min(case.problem) + 1e-6


@pytest.mark.parametrize("seed", [2, 5, 7])
def test_multineuron_is_at_least_as_tight_as_lp(seed: int) -> None:
    case = random_case(seed)
    lp = make_engine("lp").check(case.problem, Budget.seconds(60))
    mn = make_engine("multineuron").check(case.problem, Budget.seconds(60))
    m_lp = (lp.stats.get("disjunct_margins") or lp.certificate["disjunct_margins"])
    m_mn = (mn.stats.get("disjunct_margins") or mn.certificate["disjunct_margins"])
    assert len(m_lp) == len(m_mn) == len(case.problem.unsafe) == len(case.margins)  # zip must not truncate
    for a, b, exact in zip(m_lp, m_mn, case.margins):
        assert b >= a - 1e-6
        assert b <= exact + 1e-5


def test_point_box_lp_is_exact() -> None:
    layers = random_layers(np.random.default_rng(0), 3, [6, 6], 2)
    net = relu_network(layers, "p")
    x = np.array([0.1, -0.2, 0.3])
    y = net.to(dtype=torch.float64).forward(torch.as_tensor(x)[None])[0].numpy()
    problem = Problem(net, Box(x, x.copy()), (HalfSpaces(np.array([[1.0, 0.0]]), np.array([0.0])),))
    (res,) = solve_disjuncts(relaxation_model(build_system(problem)), "auto", 1e18)
    assert res.bound == pytest.approx(y[0], abs=1e-5)


def test_sigmoid_is_not_supported() -> None:
    nodes = (Node("x", Op.INPUT, (), (2,)),
             Node("l", Op.LINEAR, ("x",), (2,), {"weight": torch.eye(2), "bias": torch.zeros(2)}),
             Node("s", Op.SIGMOID, ("l",), (2,)))
    problem = Problem(Network(nodes, "s"), Box(np.zeros(2), np.ones(2)),
                      (HalfSpaces(np.array([[1.0, 0.0]]), np.array([0.0])),))
    for name in ("lp", "multineuron", "milp", "smt"):
        support = make_engine(name).supports(problem)
        assert not support and "sigmoid" in support.reason
    with pytest.raises(ValueError):
        encode(problem, problem_bounds(problem))


@pytest.mark.parametrize("name", ["lp", "multineuron"])
def test_missing_cvxpy(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cvxpy", None)  # import cvxpy -> ImportError
    engine = make_engine(name)
    support = engine.available()
    assert not support and "pip install 'certify[lp]'" in support.reason
    with pytest.raises(SolverUnavailable) as err:
        engine.check(random_case(2).problem, Budget.seconds(5))
    assert err.value.extra == "lp" and err.value.package == "cvxpy"


def test_lp_proves_an_easy_case() -> None:
    case = random_case(3)  # a case crown already proves
    assert case.expected is Status.HOLDS
    assert make_engine("lp").check(case.problem, Budget.seconds(30)).status is Status.HOLDS
