"""The ``bab`` engine against an exact oracle on small random ReLU networks.

The oracle is :func:`tests.referee.milp_minimum`, a big-M MILP (scipy's HiGHS) over the exact
network that shares no code with certify: the minimum of each disjunct's worst row over the box
is computed exactly (up to the solver's tolerances; problems whose optimum lies within 1e-4 of
the threshold are skipped as ambiguous).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from certify.budget import Budget
from certify.engines.bab import make_engine, select_mode
from certify.errors import UsageError
from certify.network import Network, Node, Op
from certify.problem import Box, HalfSpaces, Problem
from certify.verdict import Status
from tests.referee import milp_minimum

ARCHS = ((2, 8, 8, 2), (3, 6, 6, 2), (2, 6, 6, 6, 3), (4, 5, 5, 2))
AMBIGUOUS = 1e-4


def relu_net(seed: int, sizes: tuple[int, ...]) -> tuple[Network, list[tuple[np.ndarray, np.ndarray]]]:
    """A random fully connected ReLU net as IR, and its (weight [in, out], bias) layers."""
    rng = np.random.default_rng(seed)
    layers = [(rng.normal(size=(a, b)) / math.sqrt(a), 0.3 * rng.normal(size=b)) for a, b in zip(sizes, sizes[1:])]
    nodes = [Node("x", Op.INPUT, (), (sizes[0],))]
    prev = "x"
    for k, (w, b) in enumerate(layers):
        name = f"fc{k}"
        nodes.append(Node(name, Op.LINEAR, (prev,), (w.shape[1],),
                          params={"weight": torch.tensor(w, dtype=torch.float32),
                                  "bias": torch.tensor(b, dtype=torch.float32)}))
        prev = name
        if k < len(layers) - 1:
            nodes.append(Node(f"relu{k}", Op.RELU, (name,), (w.shape[1],)))
            prev = f"relu{k}"
    # The oracle works on the float32 weights the network really has.
    layers = [(np.float64(np.float32(w)), np.float64(np.float32(b))) for w, b in layers]
    return Network(tuple(nodes), output=prev, name=f"relu-{seed}"), layers


def random_problem(seed: int) -> tuple[Problem, bool] | None:
    """A random problem and whether it is violated (exactly), or None when ambiguous."""
    rng = np.random.default_rng(10_000 + seed)
    sizes = ARCHS[seed % len(ARCHS)]
    net, layers = relu_net(seed, sizes)
    centre = rng.uniform(-1, 1, size=sizes[0])
    radius = rng.uniform(0.05, 1.0, size=sizes[0])
    lo, hi = centre - radius, centre + radius
    samples = rng.uniform(lo, hi, size=(256, sizes[0]))
    with torch.no_grad():
        ys = net.forward(torch.tensor(samples, dtype=torch.float32)).double().numpy()
    disjuncts = []
    for _ in range(int(rng.integers(1, 3))):
        A = rng.normal(size=(int(rng.integers(1, 3)), sizes[-1]))
        vals = (ys @ A.T).max(axis=1)  # the disjunct's worst row per sample
        spread = vals.max() - vals.min() + 1e-3
        # Thresholds around the sampled minimum: some problems hold, some are violated.
        shift = vals.min() + rng.uniform(-0.25, 0.1) * spread
        disjuncts.append(HalfSpaces(A, np.full(A.shape[0], shift)))
    minima = [milp_minimum(layers, lo, hi, hs.A, hs.b) for hs in disjuncts]
    if any(m is None for m in minima):
        return None
    exact = min(minima)
    if abs(exact) < AMBIGUOUS:
        return None
    box = Box(lo.astype(np.float64), hi.astype(np.float64))
    return Problem(net, box, tuple(disjuncts), name=f"random-{seed}"), exact <= 0


def problems(count: int) -> list[tuple[Problem, bool]]:
    out = []
    seed = 0
    while len(out) < count:
        p = random_problem(seed)
        seed += 1
        if p is not None:
            out.append(p)
    return out


def assert_counterexample(problem: Problem, x: np.ndarray) -> None:
    assert problem.box.contains(x, tol=1e-9)
    with torch.no_grad():
        y = problem.network.forward(torch.tensor(x, dtype=torch.float32).reshape(1, -1))
    assert problem.violation(y.double().numpy()) <= 0


N_PROBLEMS = 100  # per split mode: 200 BaB runs in all


@pytest.fixture(scope="module")
def random_problems() -> list[tuple[Problem, bool]]:
    return problems(N_PROBLEMS)


#: Fewer optimizer steps than the defaults keep CI fast; soundness does not depend on them.
FAST = {"alpha_iterations": 5, "neuron": {"attack_restarts": 0}}


#: Input splitting that tightens every unproved sub-box's intermediate bounds with alpha-CROWN
#: (by default only sub-boxes with 32+ unstable ReLUs are, which these small nets never have).
TIGHTEN_ALL = {"input": {"tighten": {"iterations": 3, "unstable": 0, "every": 1}}}
#: Input splitting that hands every unproved sub-box to ReLU splitting (several boxes per batch,
#: each given up after 4 domains and handed again one depth later): the hybrid path, with boxes
#: proved there and boxes returned to input splitting.
HYBRID = {"hand_over": {"depth": 1, "every": 1, "max_unstable": 10_000, "box_domains": 4}}


#: ReLU splitting as it was before per-domain refinement and the float32 search: every domain
#: keeps its root's bounds, clamped by its splits, and alphas and betas are searched in float64.
RELU_PLAIN = {"neuron": {"refine_intermediate": False, "search_float32": False, "attack_restarts": 0}}


#: ReLU splitting one disjunct at a time from the start (by default only after a joint search
#: that did not settle the problem).
PER_DISJUNCT = {"neuron": {"joint_share": 0.0, "attack_restarts": 0}}


@pytest.mark.parametrize("mode,extra,counter", [("input", {}, ""), ("neuron", {}, ""),
                                                ("neuron", RELU_PLAIN, ""), ("neuron", PER_DISJUNCT, ""),
                                                ("input", TIGHTEN_ALL, "tightened"),
                                                ("input", HYBRID, "relu_proved")],
                         ids=["input", "neuron", "neuron-plain", "neuron-per-disjunct", "input-tightened",
                              "input-hybrid"])
def test_bab_agrees_with_exact_milp(mode: str, extra: dict[str, int], counter: str,
                                    random_problems: list[tuple[Problem, bool]]) -> None:
    engine = make_engine({"mode": mode, **FAST, **extra})
    kinds = {True: 0, False: 0}
    counts = {"tightened": 0, "relu_proved": 0, "relu_boxes": 0}
    for problem, is_violated in random_problems:
        verdict = engine.check(problem, Budget.seconds(20))
        assert verdict.status is not Status.UNKNOWN, (problem.name, verdict.reason)
        assert verdict.stats["mode"] == mode
        for key in counts:
            counts[key] += verdict.stats.get(key, 0)
        expected = Status.VIOLATED if is_violated else Status.HOLDS
        assert verdict.status is expected, (problem.name, verdict.status, verdict.stats)
        if verdict.status is Status.VIOLATED:
            assert verdict.counterexample is not None
            assert_counterexample(problem, verdict.counterexample.x)
        kinds[is_violated] += 1
    assert kinds[True] >= 10 and kinds[False] >= 10, kinds
    assert (counts["tightened"] > 0) == (counter == "tightened"), counts
    if counter == "relu_proved":  # boxes were proved there, and some given back to input splitting
        assert counts["relu_proved"] > 0 and counts["relu_boxes"] > counts["relu_proved"], counts


@pytest.mark.parametrize("mode", ["input", "neuron"])
def test_domain_cap_and_timeout_give_unknown_with_reason(
        mode: str, random_problems: list[tuple[Problem, bool]]) -> None:
    # A holding problem whose proof needs more than a handful of domains.
    # (Chosen by input splitting, which is quick on these nets.)
    problem = next(p for p, bad in random_problems if not bad
                   and make_engine({"mode": "input", **FAST}).check(p, Budget.seconds(20)).stats["domains"] >= 64)
    capped = make_engine({"mode": mode, "max_domains": 2, "alpha_iterations": 0, "input": {"batch_size": 1},
                          "neuron": {"batch_size": 1, "beta_iterations": 0, "attack_restarts": 0}})
    verdict = capped.check(problem, Budget.seconds(20))
    assert verdict.status is Status.UNKNOWN
    assert "domain cap 2 reached" in verdict.reason
    verdict = make_engine({"mode": mode}).check(problem, Budget.seconds(0))
    assert verdict.status is Status.UNKNOWN
    assert "timeout" in verdict.reason


def test_mode_selection_and_options() -> None:
    small, _ = relu_net(0, (3, 4, 2))
    wide, _ = relu_net(0, (40, 4, 2))
    box = lambda n: Box(np.zeros(n), np.ones(n))  # noqa: E731
    unsafe = (HalfSpaces(np.array([[1.0, -1.0]]), np.array([0.0])),)
    engine = make_engine({})
    assert select_mode(Problem(small, box(3), unsafe), engine.options) == "input"
    assert select_mode(Problem(wide, box(40), unsafe), engine.options) == "neuron"
    assert select_mode(Problem(wide, box(40), unsafe), make_engine({"mode": "input"}).options) == "input"
    assert engine.capabilities.complete and engine.capabilities.falsifies
    with pytest.raises(UsageError, match="bab.mode: 'sideways' is not one of"):
        make_engine({"mode": "sideways"})
    with pytest.raises(UsageError, match="bab.neuron: unknown option"):
        make_engine({"neuron": {"batchsize": 3}})
    with pytest.raises(UsageError, match="bab.neuron.batch_size: 'many' is not an integer"):
        make_engine({"neuron": {"batch_size": "many"}})
    assert make_engine({"neuron": {"batch_size": 7}}).options.neuron.batch_size == 7


def test_input_mode_is_sound_on_tanh_networks() -> None:
    """Input splitting with CROWN bounds is sound on non-PL nets: verdicts match sampling."""
    rng = np.random.default_rng(3)
    w1, w2 = rng.normal(size=(2, 6)), rng.normal(size=(6, 1))
    nodes = (Node("x", Op.INPUT, (), (2,)),
             Node("fc0", Op.LINEAR, ("x",), (6,), params={"weight": torch.tensor(w1, dtype=torch.float32),
                                                          "bias": torch.zeros(6)}),
             Node("t0", Op.TANH, ("fc0",), (6,)),
             Node("fc1", Op.LINEAR, ("t0",), (1,), params={"weight": torch.tensor(w2, dtype=torch.float32),
                                                           "bias": torch.zeros(1)}))
    net = Network(nodes, output="fc1")
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 201), np.linspace(-1, 1, 201)), -1).reshape(-1, 2)
    with torch.no_grad():
        ys = net.forward(torch.tensor(grid, dtype=torch.float32)).double().numpy()[:, 0]
    engine = make_engine({})
    box = Box(-np.ones(2), np.ones(2))
    # y <= min - 0.05 is unsafe-free (holds); y <= min + 0.05 is reachable (violated).
    holds = engine.check(Problem(net, box, (HalfSpaces(np.ones((1, 1)), np.array([ys.min() - 0.05])),)),
                         Budget.seconds(20))
    assert holds.status is Status.HOLDS
    problem = Problem(net, box, (HalfSpaces(np.ones((1, 1)), np.array([ys.min() + 0.05])),))
    bad = engine.check(problem, Budget.seconds(20))
    assert bad.status is Status.VIOLATED
    assert_counterexample(problem, bad.counterexample.x)


@pytest.mark.parametrize("root_slopes", [False, True], ids=["default-slopes", "root-slopes"])
def test_refined_domain_bounds_hold_on_the_domain_and_tighten(root_slopes: bool) -> None:
    """Per-domain refinement (CROWN after the newest split, with CROWN's default slopes or the
    root's alpha-CROWN slopes) keeps every pre-activation of every sampled point that satisfies
    the domain's splits inside the refined bounds, never loosens the clamped root bounds, and
    tightens some of them."""
    from certify.bab.bounder import Bounder
    from certify.bab.domains import SplitDomains
    from certify.bab.neuron_split import root_bounds
    from certify.bab.options import BaBOptions, NeuronSplitOptions
    from certify.spec_matrix import SpecMatrix

    rng = np.random.default_rng(7)
    tightened = checked = 0
    for seed in range(12):
        net, layers = relu_net(100 + seed, (4, 10, 10, 10, 2))
        net = net.to(dtype=torch.float64)
        lo = torch.tensor(rng.uniform(-1, 0, size=(1, 4)))
        hi = lo + torch.tensor(rng.uniform(0.5, 1.5, size=(1, 4)))
        options = BaBOptions(neuron=NeuronSplitOptions(intermediate_alpha_iterations=10 if root_slopes else 0))
        root = root_bounds(net, lo, hi, options)
        assert bool(root.slopes) == root_slopes
        problem = Problem(net, Box(lo[0].numpy(), hi[0].numpy()), (HalfSpaces(np.ones((1, 2)), np.zeros(1)),))
        bounder = Bounder(net, SpecMatrix.of(problem, torch.float64, "cpu"), root)
        layout = bounder.layout
        # Split up to three unstable neurons of the first layer, at random.
        unstable = ((bounder.l0 < 0) & (bounder.u0 > 0))[0, :layout.sizes[0]].nonzero().flatten()
        if unstable.numel() == 0:
            continue
        chosen = unstable[torch.randperm(unstable.numel(), generator=torch.Generator().manual_seed(seed))[:3]]
        splits = torch.zeros(1, layout.total, dtype=torch.int8)
        splits[0, chosen] = torch.tensor(rng.choice([-1, 1], size=chosen.numel()), dtype=torch.int8)
        c_lo = torch.where(splits > 0, bounder.l0.clamp(min=0), bounder.l0)  # the splits applied
        c_hi = torch.where(splits < 0, bounder.u0.clamp(max=0), bounder.u0)
        zero = torch.zeros(1, dtype=torch.long)
        domain = SplitDomains(key=torch.zeros(1), depth=zero, node=zero, splits=splits, box=zero,
                              alpha=torch.zeros(1, 1, layout.total),
                              beta=torch.zeros(1, 1, layout.total), open=torch.ones(1, 1, dtype=torch.bool), lo=c_lo,
                              hi=c_hi, after=zero)
        refined = bounder.refine(domain)
        r_lo, r_hi = refined.lo, refined.hi
        assert bool((r_lo >= c_lo).all() and (r_hi <= c_hi).all())
        tightened += int(((r_lo > c_lo + 1e-9) | (r_hi < c_hi - 1e-9)).sum())
        # Points of the box that satisfy the splits, and their pre-activations.
        x = lo + (hi - lo) * torch.rand(20_000, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        pre, h = [], x
        for w, b in layers[:-1]:
            z = h @ torch.tensor(w) + torch.tensor(b)
            pre.append(z)
            h = z.clamp(min=0)
        z = torch.cat(pre, dim=1)  # [N, total]
        s = splits[0].to(torch.float64)
        inside = ((z * s) >= 0).all(dim=1)
        z = z[inside]
        if z.shape[0] == 0:  # no sample satisfies these splits (the domain may be empty)
            continue
        checked += 1
        assert bool((z >= r_lo - 1e-9).all() and (z <= r_hi + 1e-9).all()), seed
    assert checked >= 6 and tightened > 0, (checked, tightened)
