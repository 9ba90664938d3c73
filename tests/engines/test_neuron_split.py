"""Neuron splitting beyond ReLU MLPs: branching on sigmoid and tanh neurons, ReLU splitting on
conv nets, the batch shrinking to a memory cap.  Ground truth never comes from certify:

* sigmoid / tanh nets on 2-D boxes: a dense grid (a point reaching a value) plus interval
  arithmetic on every grid cell (no point below a value), :func:`tests.referee.grid_minimum`;
* ReLU conv nets: the exact big-M MILP of :func:`tests.referee.milp_minimum`, on the conv layers
  unrolled to matrices.

(benchmarks/bab_nonlinear.py runs the same checks on 200 problems.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from certify.budget import Budget
from certify.engines.bab import make_engine
from certify.network import Network, Node, Op
from certify.problem import Box, HalfSpaces, Problem
from certify.verdict import Status
from tests.referee import grid_minimum, milp_minimum

#: Problems whose true margin lies within this of 0 are too close to call and skipped.
AMBIGUOUS = 0.02
OPS = {"sigmoid": Op.SIGMOID, "tanh": Op.TANH, "relu": Op.RELU}


def smooth_net(seed: int, sizes: tuple[int, ...], acts: list[str]) -> tuple[Network, list]:
    """A dense net with the given activations as IR, and its (weight [in, out], bias) layers."""
    rng = np.random.default_rng(seed)
    layers = [(np.float64(np.float32(2 * rng.normal(size=(a, b)) / math.sqrt(a))),
               np.float64(np.float32(0.5 * rng.normal(size=b)))) for a, b in zip(sizes, sizes[1:])]
    nodes, prev = [Node("x", Op.INPUT, (), (sizes[0],))], "x"
    for k, (w, b) in enumerate(layers):
        nodes.append(Node(f"fc{k}", Op.LINEAR, (prev,), (w.shape[1],),
                          params={"weight": torch.tensor(w, dtype=torch.float32),
                                  "bias": torch.tensor(b, dtype=torch.float32)}))
        prev = f"fc{k}"
        if k < len(layers) - 1:
            nodes.append(Node(f"act{k}", OPS[acts[k]], (prev,), (w.shape[1],)))
            prev = f"act{k}"
    return Network(tuple(nodes), prev, f"smooth-{seed}"), layers


def smooth_problem(seed: int) -> tuple[Problem, Status] | None:
    """A random sigmoid/tanh(/ReLU) net on a 2-D box with a threshold set near its true minimum,
    and the truth; None when the referee cannot call it."""
    rng = np.random.default_rng(50_000 + seed)
    depth = int(rng.integers(1, 3))
    sizes = (2, *[int(rng.integers(4, 9)) for _ in range(depth)], 2)
    acts = [str(rng.choice(["sigmoid", "tanh", "tanh", "sigmoid", "relu"])) for _ in range(depth)]
    net, layers = smooth_net(seed, sizes, acts)
    lo = rng.uniform(-1, 0.5, size=2)
    hi = lo + rng.uniform(0.3, 1.5, size=2)
    A = rng.normal(size=(1, 2))
    zero = np.zeros(1)
    lower, upper = grid_minimum(layers, acts, lo, hi, A, zero, cells=48)
    b = np.array([lower + rng.uniform(-0.6, 0.4) * (upper - lower + 0.2)])  # sometimes holds, sometimes not
    lower, upper = grid_minimum(layers, acts, lo, hi, A, b, cells=128)
    if lower > AMBIGUOUS:
        truth = Status.HOLDS
    elif upper < -AMBIGUOUS:
        truth = Status.VIOLATED
    else:
        return None
    return Problem(net, Box(lo, hi), (HalfSpaces(A, b),), name=f"smooth-{seed}"), truth


def smooth_problems(count: int) -> list[tuple[Problem, Status]]:
    out, seed = [], 0
    while len(out) < count:
        p = smooth_problem(seed)
        seed += 1
        if p is not None:
            out.append(p)
    return out


#: Neuron splitting forced on these small inputs (auto mode would split the input box).
NEURON = {"mode": "neuron", "alpha_iterations": 5, "neuron": {"attack_restarts": 2}}


def test_branching_on_sigmoid_and_tanh_neurons_never_contradicts_the_referee() -> None:
    problems = smooth_problems(30)
    engine = make_engine(NEURON)
    decided = {Status.HOLDS: 0, Status.VIOLATED: 0}
    truths = {Status.HOLDS: 0, Status.VIOLATED: 0}
    split_smooth = 0
    for problem, truth in problems:
        verdict = engine.check(problem, Budget.seconds(8))
        truths[truth] += 1
        assert verdict.status in (truth, Status.UNKNOWN), (problem.name, verdict.status, truth, verdict.reason)
        if verdict.status is not Status.UNKNOWN:
            decided[verdict.status] += 1
        assert verdict.stats.get("mode") == "neuron"
        split_smooth += int(verdict.stats.get("domains", 0) > 1)
    assert truths[Status.HOLDS] >= 8 and truths[Status.VIOLATED] >= 8, truths
    # The search must really decide: most holding problems proved, most violated ones falsified.
    assert decided[Status.HOLDS] >= 0.7 * truths[Status.HOLDS], (decided, truths)
    assert decided[Status.VIOLATED] >= 0.9 * truths[Status.VIOLATED], (decided, truths)
    assert split_smooth >= 3  # some proofs needed splits


def test_neuron_splits_tighten_sigmoid_bounds() -> None:
    """A holding problem neither CROWN nor alpha-CROWN proves at the root is proved by splitting."""
    for problem, truth in smooth_problems(60):
        if truth is not Status.HOLDS:
            continue
        root = make_engine({**NEURON, "max_domains": 1}).check(problem, Budget.seconds(5))
        if root.status is Status.HOLDS:
            continue
        verdict = make_engine(NEURON).check(problem, Budget.seconds(20))
        if verdict.status is Status.HOLDS and verdict.stats["domains"] > 1:
            return
    pytest.fail("no holding problem needed (and got) a proof by neuron splitting")


def conv_net(seed: int) -> tuple[Network, list[tuple[np.ndarray, np.ndarray]]]:
    """A small ReLU conv net (1x5x5 input, two convs, a dense head) as IR, and its layers with
    every conv unrolled to a matrix (for the MILP referee)."""
    gen = torch.Generator().manual_seed(seed)
    c1, c2 = torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.Conv2d(3, 2, 3, stride=2)
    head = torch.nn.Linear(2 * 2 * 2, 2)
    with torch.no_grad():
        for m in (c1, c2, head):
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / math.sqrt(m.weight[0].numel()))
            m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))

    def node(name: str, op: Op, src: str, shape: tuple[int, ...], m: torch.nn.Module, **attrs: object) -> Node:
        return Node(name, op, (src,), shape, {"weight": m.weight.detach().float(), "bias": m.bias.detach().float()},
                    attrs)

    nodes = (Node("x", Op.INPUT, (), (1, 5, 5)),
             node("c1", Op.CONV, "x", (3, 5, 5), c1, stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1),
             Node("r1", Op.RELU, ("c1",), (3, 5, 5)),
             node("c2", Op.CONV, "r1", (2, 2, 2), c2, stride=(2, 2), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1),
             Node("r2", Op.RELU, ("c2",), (2, 2, 2)),
             Node("f", Op.RESHAPE, ("r2",), (8,), attrs={"shape": (8,)}),
             Node("y", Op.LINEAR, ("f",), (2,), {"weight": head.weight.detach().T.contiguous().float(),
                                                 "bias": head.bias.detach().float()}))
    net = Network(nodes, "y", f"conv-{seed}")

    def unrolled(m: torch.nn.Module, in_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        n = int(np.prod(in_shape))
        with torch.no_grad():
            basis = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
            zero = m.double()(torch.zeros(1, *in_shape, dtype=torch.float64)).reshape(-1)
            cols = m.double()(basis).reshape(n, -1) - zero
        return cols.numpy(), zero.numpy()

    layers = [unrolled(c1, (1, 5, 5)), unrolled(c2, (3, 5, 5)),
              (head.weight.detach().double().T.numpy(), head.bias.detach().double().numpy())]
    return net, layers


@pytest.mark.parametrize("seed", range(8))
def test_relu_splitting_on_conv_nets_agrees_with_the_milp(seed: int) -> None:
    net, layers = conv_net(seed)
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0, 1, size=25)
    lo, hi = np.clip(centre - 0.15, 0, 1), np.clip(centre + 0.15, 0, 1)
    A = np.array([[1.0, -1.0]]) if seed % 2 else np.array([[-1.0, 1.0]])
    exact = milp_minimum(layers, lo, hi, A, np.zeros(1))
    assert exact is not None
    b = np.array([exact + (0.05 if seed % 4 < 2 else -0.05)])  # violated, then holding, by 0.05
    problem = Problem(net, Box(lo.reshape(1, 5, 5), hi.reshape(1, 5, 5)), (HalfSpaces(A, b),))
    verdict = make_engine({"mode": "neuron", "alpha_iterations": 5}).check(problem, Budget.seconds(30))
    truth = Status.VIOLATED if exact - b[0] < 0 else Status.HOLDS
    assert verdict.status is truth, (verdict.status, truth, exact - b[0], verdict.reason)


def test_batches_shrink_to_the_memory_cap() -> None:
    net, layers = conv_net(3)
    lo, hi = np.zeros(25), np.full(25, 0.6)
    A = np.array([[1.0, -1.0]])
    exact = milp_minimum(layers, lo, hi, A, np.zeros(1))
    problem = Problem(net, Box(lo.reshape(1, 5, 5), hi.reshape(1, 5, 5)), (HalfSpaces(A, np.array([exact - 0.05])),))
    tiny = make_engine({"mode": "neuron", "alpha_iterations": 5, "neuron": {"batch_memory_mb": 0}})
    verdict = tiny.check(problem, Budget.seconds(30))
    assert verdict.status is Status.HOLDS, verdict.reason
    assert verdict.stats["domains"] == verdict.stats["batches"] > 1  # one domain per batch
