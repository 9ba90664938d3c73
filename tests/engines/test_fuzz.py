"""The batch fuzzer: boxes respected exactly, planted violations found (and replayed in
onnxruntime), properties that hold never reported violated, disjunctions, many problems."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as hst

from certify.budget import Budget
from certify.engines.registry import make_engine
from certify.fuzz import BatchFuzzer, FuzzOptions, fuzz_grouped, fuzz_instances, fuzz_many
from certify.fuzz import strategies as st
from certify.fuzz.objective import float32_box
from certify.fuzz.pool import SeedPool
from certify.fuzz.rng import Rng
from certify.instance import Instance
from certify.network import Network, Node, Op
from certify.problem import Box, HalfSpaces, Problem
from certify.replay import OnnxOracle
from certify.verdict import Status

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")



@pytest.fixture(autouse=True)
def one_thread():
    """Tiny nets run faster on one thread (and other jobs share the machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def global_rng_untouched():
    """Neither these tests nor the fuzzer draw from torch's global RNG: every draw has its own
    generator, so results do not depend on which tests ran before."""
    before = torch.random.get_rng_state()
    yield
    assert torch.equal(torch.random.get_rng_state(), before), "torch's global RNG was used"


FAST = FuzzOptions(batch=256, pgd_steps=8, seed=1)


# ----------------------------------------------------------------------------- tiny nets
def mlp(layers: list[torch.nn.Linear], name: str = "mlp", in_shape: tuple[int, ...] | None = None) -> Network:
    """The IR of Linear-ReLU-...-Linear with the given torch layers."""
    n_in = layers[0].in_features
    nodes = [Node("x", Op.INPUT, (), in_shape or (n_in,))]
    prev = "x"
    for k, layer in enumerate(layers):
        w = layer.weight.detach().T.contiguous()
        nodes.append(Node(f"fc{k}", Op.LINEAR, (prev,), (layer.out_features,),
                          {"weight": w, "bias": layer.bias.detach().clone()}))
        prev = f"fc{k}"
        if k < len(layers) - 1:
            nodes.append(Node(f"relu{k}", Op.RELU, (prev,), (layer.out_features,)))
            prev = f"relu{k}"
    return Network(tuple(nodes), prev, name)


def linear(n_in: int, n_out: int, g: torch.Generator) -> torch.nn.Linear:
    """A torch Linear with torch's default initial distribution (uniform in +-1/sqrt(n_in)),
    drawn from ``g`` rather than the global RNG."""
    layer = torch.nn.utils.skip_init(torch.nn.Linear, n_in, n_out)
    bound = 1 / math.sqrt(n_in)
    with torch.no_grad():
        layer.weight.copy_((2 * torch.rand(n_out, n_in, generator=g) - 1) * bound)
        layer.bias.copy_((2 * torch.rand(n_out, generator=g) - 1) * bound)
    return layer


def planted(seed: int = 0, hidden: int = 16) -> tuple[torch.nn.Sequential, Network]:
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(linear(3, hidden, g), torch.nn.ReLU(), linear(hidden, 2, g))
    return model, mlp([model[0], model[2]])


def export(model: torch.nn.Module, n_in: int, path) -> OnnxOracle:
    torch.onnx.export(model, torch.zeros(1, n_in), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    return OnnxOracle(path)


def box(lo, hi) -> Box:
    return Box(np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64))


def threshold_problem(net: Network, b: Box, row: list[float], rhs: float, name: str = "") -> Problem:
    return Problem(net, b, (HalfSpaces(np.asarray([row], dtype=np.float64), np.asarray([rhs])),), name=name)


def output_range(net: Network, b: Box, row: list[float], n: int = 20000) -> tuple[float, float]:
    """Sampled min and max of ``row . net(x)`` over the box (corners included)."""
    g = torch.Generator().manual_seed(0)
    lo, hi = torch.as_tensor(b.lower), torch.as_tensor(b.upper)
    x = lo + (hi - lo) * torch.rand((n, lo.numel()), generator=g, dtype=torch.float64)
    corners = torch.cartesian_prod(*[torch.stack([lo[i], hi[i]]) for i in range(lo.numel())])
    x = torch.cat([x, corners.reshape(-1, lo.numel())])
    with torch.no_grad():
        y = net.to(torch.float64)(x) @ torch.as_tensor(row, dtype=torch.float64)
    return float(y.min()), float(y.max())


# ----------------------------------------------------------------------------- boxes, exactly
bounds = hst.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(hst.lists(hst.tuples(bounds, bounds), min_size=1, max_size=6), hst.integers(0, 2**31 - 1),
       hst.floats(1e-3, 1.0))
def test_strategies_respect_boxes_exactly(pairs, seed, s0) -> None:
    lo64 = np.array([min(a, b) for a, b in pairs], dtype=np.float64)
    hi64 = np.array([max(a, b) for a, b in pairs], dtype=np.float64)
    lo32, hi32 = float32_box(box(lo64, hi64))
    assert np.all(lo32.astype(np.float64) >= lo64) and np.all(hi32.astype(np.float64) <= hi64)
    B = 16
    lo = torch.as_tensor(lo32).expand(B, -1).contiguous()
    hi = torch.as_tensor(hi32).expand(B, -1).contiguous()
    rng = Rng(seed)
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(lo.shape, generator=g)
    grad = torch.randn(lo.shape, generator=g) * (torch.rand(lo.shape, generator=g) < 0.7)
    scale = st.act_scale(s0, torch.randint(0, 5, (B,), generator=g))
    step = st.act_step(x, lo, hi, scale)
    far = x + 1e6 * torch.randn(lo.shape, generator=g)

    def each(k: int) -> torch.Tensor:  # every lane on strategy k
        return st.starts(torch.full((B,), k), x, grad, scale, lo, hi, rng)

    mixed = st.starts(torch.randint(0, len(st.STRATEGIES), (B,), generator=g), x, grad, scale, lo, hi, rng)
    outs = [st.pgd(x, grad, step * 50, lo, hi), st.pgd(x, grad, step, lo, hi, torch.rand(B, generator=g)),
            st.project(far, lo, hi), mixed] + [each(k) for k in range(len(st.STRATEGIES))]
    for out in outs:
        assert out.dtype == torch.float32
        assert bool(((out >= lo) & (out <= hi)).all())
        out64 = out.double().numpy()
        assert np.all(out64 >= lo64) and np.all(out64 <= hi64)  # inside the float64 box, too
    pgd, corners, uniform, boundary = (outs[4 + k] for k in (st.PGD, st.CORNERS, st.UNIFORM, st.BOUNDARY))
    assert bool(((corners == lo) | (corners == hi)).all())
    # pgd moves each coordinate by at most ACT's step; boundary only moves coordinates to a bound
    assert bool(((pgd - x).abs() <= step * (1 + 1e-6) + 1e-6 * (hi - lo).abs()).all())
    assert bool(((boundary == x) | (boundary == lo) | (boundary == hi)).all())
    # with scale 1 every coordinate of a boundary start is at a bound; with scale 0 none moves
    full = st.starts(torch.full((B,), st.BOUNDARY), x, grad, torch.ones(B), lo, hi, rng)
    assert bool(((full == lo) | (full == hi)).all())
    assert torch.equal(st.starts(torch.full((B,), st.BOUNDARY), x, grad, torch.zeros(B), lo, hi, rng), x)


@settings(max_examples=40, deadline=None)
@given(hst.integers(0, 2**31 - 1), hst.booleans())
def test_lane_margin_and_its_slope_match_the_problems(seed: int, shared: bool) -> None:
    """Per lane, the margin is min over disjuncts of max over rows of ``A y - b + tol``, as in
    float64 on the problem, and the slope is its gradient; both row layouts agree."""
    from certify.fuzz import objective as obj_mod

    rng = np.random.default_rng(seed)
    n_out = 4
    net = mlp([linear(2, n_out, torch.Generator().manual_seed(seed))])
    pool_rows = rng.normal(size=(5, n_out))  # rows shared between problems, as in real suites
    problems = []
    for _ in range(int(rng.integers(1, 5))):
        unsafe = []
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(1, 4))
            unsafe.append(HalfSpaces(pool_rows[rng.integers(0, 5, size=k)], rng.normal(size=k)))
        problems.append(Problem(net, Box(-np.ones(2), np.ones(2)), tuple(unsafe)))
    objective = obj_mod.Objective.of(problems, torch.float64, torch.device("cpu"))
    pid = torch.as_tensor(rng.integers(0, len(problems), size=32))
    lanes = obj_mod.LaneObjective.gather(objective, pid)
    y = torch.as_tensor(rng.normal(size=(32, n_out)) * 3)
    factor = obj_mod.SHARED_ROWS_FACTOR
    try:
        obj_mod.SHARED_ROWS_FACTOR = 10**6 if shared else 0
        yg = y.clone().requires_grad_(True)
        m_auto = lanes.margin(yg)
        (grad,) = torch.autograd.grad(m_auto.sum(), yg)
        m, slope = lanes.margin_and_slope(y)
    finally:
        obj_mod.SHARED_ROWS_FACTOR = factor
    for lane, p in enumerate(pid.tolist()):
        yl = y[lane].numpy()
        expected = min(float(np.max(hs.A @ yl - hs.b + obj_mod.FALSIFY_TOLERANCE * (1 + np.abs(hs.b))))
                       for hs in problems[p].unsafe)
        assert math.isclose(float(m[lane]), expected, rel_tol=1e-12, abs_tol=1e-12)
    assert torch.equal(m, m_auto.detach())
    assert torch.allclose(slope, grad)  # no ties among continuous random values


def test_uniform_starts_cover_the_box() -> None:
    lo, hi = torch.zeros(4000, 2), torch.tensor([1.0, 10.0]).expand(4000, 2).contiguous()
    u = st.starts(torch.full((4000,), st.UNIFORM), lo, torch.zeros_like(lo), torch.zeros(4000), lo, hi, Rng(1))
    for d, width in enumerate((1.0, 10.0)):
        counts = torch.histc(u[:, d], bins=4, min=0.0, max=width)
        assert bool((counts > 800).all()) and bool((counts < 1200).all())


def test_grouped_categorical_draws_follow_their_weights() -> None:
    n, weights = 20000, torch.tensor([0.2, 0.0, 0.5, 0.3])
    order, counts = Rng(3).grouped(weights, n)
    assert sum(counts) == n and counts[1] == 0
    assert torch.equal(order.sort().values, torch.arange(n))  # a permutation
    freq = torch.tensor(counts, dtype=torch.float64) / n
    assert torch.allclose(freq, weights.double(), atol=0.02)
    # each category's items are spread over the whole range, not bunched at one end
    edges = [0, *torch.tensor(counts).cumsum(0).tolist()]
    for k in (0, 2, 3):
        items = order[edges[k]:edges[k + 1]].double()
        assert abs(float(items.mean()) - n / 2) < 0.03 * n
        assert float(items.min()) < 0.01 * n and float(items.max()) > 0.99 * n


def test_seed_pool_keeps_best_sorted_and_picks_within_each_problem() -> None:
    P, K, n = 3, 8, 2
    rng = Rng(5)
    lower, upper = torch.zeros(P, n), torch.ones(P, n)
    pool = SeedPool.start(lower, upper, K, rng)
    # problem p's candidates have margins p*100 + j; they sit at x = (p, j)
    pid = torch.arange(P).repeat_interleave(20)
    j = torch.arange(20).repeat(P).float()
    x = torch.stack([pid.float(), j], dim=1)
    perm = torch.randperm(P * 20, generator=torch.Generator().manual_seed(0))
    pool.insert(pid[perm], x[perm], torch.zeros_like(x), (pid.float() * 100 + j)[perm])
    best = (torch.arange(P).float() * 100).unsqueeze(1) + torch.arange(K).float()
    assert torch.equal(pool.margin.sort(dim=1).values, best)
    assert torch.equal(pool.x[:, :, 1], pool.margin - (torch.arange(P).float() * 100).unsqueeze(1))  # rows moved whole
    seeds, _, before = pool.pick(torch.tensor([2, 0, 1] * 2000), rng)
    assert torch.equal(seeds[:, 0], torch.tensor([2.0, 0.0, 1.0] * 2000))  # each lane's own problem
    assert bool((before >= 0).all()) and int(pool.picks.sum()) == 6000
    rank = torch.bincount(seeds[:, 1].long(), minlength=K)
    assert int(rank[0]) > int(rank[K // 2]) > int(rank[K - 1]) > 0  # better seeds are picked more


def test_act_scale_grows_towards_one() -> None:
    s = st.act_scale(0.1, torch.arange(5))
    assert math.isclose(float(s[0]), 0.1, rel_tol=1e-6)
    assert math.isclose(float(s[1]), 1 - 0.9**2, rel_tol=1e-6)
    assert bool((s[1:] > s[:-1]).all()) and float(s[-1]) < 1


# ----------------------------------------------------------------------------- planted violations
def test_planted_violation_is_found_and_replays_in_onnxruntime(tmp_path) -> None:
    model, net = planted()
    oracle = export(model, 3, tmp_path / "net.onnx")
    b = box([-1, -1, -1], [1, 1, 1])
    row = [1.0, -1.0]
    lo, hi = output_range(net, b, row)
    rhs = lo + 0.05 * (hi - lo)  # unsafe: y0 - y1 <= rhs, a thin sliver of the box
    problem = threshold_problem(net, b, row, rhs, "planted")
    [out] = fuzz_many([problem], Budget.seconds(20), FAST, lambda i: oracle)
    assert out.verdict.status is Status.VIOLATED
    cex = out.verdict.counterexample
    assert cex is not None and cex.replayed
    assert b.contains(cex.x)
    y = oracle.run(cex.x)
    assert problem.violation(y) <= 0
    assert out.first_hit_seconds is not None and out.samples > 0


def test_engine_finds_violation_without_oracle() -> None:
    _, net = planted(1)
    b = box([-1, -1, -1], [1, 1, 1])
    lo, hi = output_range(net, b, [0.0, 1.0])
    problem = threshold_problem(net, b, [0.0, 1.0], lo + 0.1 * (hi - lo))
    engine = make_engine("fuzz", {"batch": 128, "pgd_steps": 8})
    assert engine.name == "fuzz" and engine.capabilities.falsifies and not engine.capabilities.proves
    assert engine.available() and engine.supports(problem)
    verdict = engine.check(problem, Budget.seconds(20))
    assert verdict.status is Status.VIOLATED and verdict.engine == "fuzz"
    cex = verdict.counterexample
    assert cex is not None and not cex.replayed and b.contains(cex.x)
    assert problem.violation(cex.y) <= 0


def test_engine_rejects_unknown_options() -> None:
    from certify.errors import UsageError
    from certify.fuzz.options import StrategyWeights

    with pytest.raises(UsageError):
        make_engine("fuzz", {"batchsize": 3})
    with pytest.raises(UsageError, match="weights"):
        make_engine("fuzz", {"weights": {"pgd": -1}})
    engine = make_engine("fuzz", {"weights": {"pgd": 1, "uniform": 0, "corners": 0, "boundary": 0}, "batch": 64})
    assert engine.options.weights == StrategyWeights(pgd=1.0, corners=0.0, uniform=0.0, boundary=0.0)
    assert engine.options.batch == 64 and engine.options.pgd_steps == FuzzOptions().pgd_steps


# ----------------------------------------------------------------------------- properties that hold
def relu_net(n: int) -> Network:
    return Network((Node("x", Op.INPUT, (), (n,)), Node("r", Op.RELU, ("x",), (n,))), "r", "relu")


def test_property_that_holds_is_never_violated(tmp_path) -> None:
    net = relu_net(3)
    b = box([-2, -2, -2], [2, 2, 2])
    # relu(x) >= 0, so y0 <= -1 is unreachable; y0 <= -1e-7 also (it must not slip through rounding)
    problems = [threshold_problem(net, b, [1.0, 0.0, 0.0], -1.0),
                threshold_problem(net, b, [0.0, 1.0, 0.0], -1e-7),
                threshold_problem(net, b, [0.0, 0.0, 1.0], 0.0)]  # boundary: y2 = 0 only at x2 <= 0
    outs = fuzz_many(problems, Budget.seconds(30), FuzzOptions(batch=128, seed=3, max_samples=128 * 40))
    assert [o.verdict.status for o in outs[:2]] == [Status.UNKNOWN, Status.UNKNOWN]
    for o in outs[:2]:
        assert "no counterexample found in" in o.verdict.reason and o.samples > 0
    # y2 <= 0 is reachable (x2 <= 0) but only exactly on the boundary: the strict tolerance refuses it
    assert outs[2].verdict.status is Status.UNKNOWN


# ----------------------------------------------------------------------------- disjunctions
def test_disjunctive_unsafe_set_attacks_the_reachable_disjunct() -> None:
    _, net = planted(2)
    b = box([-1, -1, -1], [1, 1, 1])
    lo0, _ = output_range(net, b, [1.0, 0.0])
    lo1, hi1 = output_range(net, b, [0.0, 1.0])
    unreachable = HalfSpaces(np.array([[1.0, 0.0], [-1.0, 0.0]]), np.array([lo0 - 10.0, 1e9]))
    reachable = HalfSpaces(np.array([[0.0, 1.0]]), np.array([lo1 + 0.05 * (hi1 - lo1)]))
    problem = Problem(net, b, (unreachable, reachable, unreachable))
    [out] = fuzz_many([problem], Budget.seconds(20), FAST)
    assert out.verdict.status is Status.VIOLATED
    cex = out.verdict.counterexample
    assert cex is not None
    assert reachable.margin(cex.y) <= 0 and unreachable.margin(cex.y) > 0
    only_unreachable = Problem(net, b, (unreachable, unreachable))
    [none] = fuzz_many([only_unreachable], Budget.seconds(20), FuzzOptions(batch=64, max_samples=64 * 30))
    assert none.verdict.status is Status.UNKNOWN


# ----------------------------------------------------------------------------- many problems, one batch
def test_each_problem_of_a_shared_batch_gets_its_own_answer(tmp_path) -> None:
    model, net = planted(3)
    oracle = export(model, 3, tmp_path / "net.onnx")
    boxes = [box([-1, -1, -1], [1, 1, 1]), box([0, 0, 0], [0.5, 0.5, 0.5]), box([-1, 0.2, -0.3], [-0.5, 0.4, 0.3])]
    problems, expect = [], []
    for k, b in enumerate(boxes):
        lo, hi = output_range(net, b, [1.0, 0.0])
        problems.append(threshold_problem(net, b, [1.0, 0.0], lo + 0.05 * (hi - lo), f"sat{k}"))
        expect.append(Status.VIOLATED)
        problems.append(threshold_problem(net, b, [1.0, 0.0], lo - 0.5 * (hi - lo) - 0.1, f"unsat{k}"))
        expect.append(Status.UNKNOWN)
    fuzzer = BatchFuzzer(problems, FuzzOptions(batch=192, pgd_steps=8, seed=4), "cpu", lambda i: oracle)
    fuzzer.run(time.monotonic() + 30, 60)
    outs = fuzzer.outcomes()
    assert [o.verdict.status for o in outs] == expect
    for o, p in zip(outs, problems):
        assert o.index == problems.index(p)
        if o.verdict.status is Status.VIOLATED:
            cex = o.verdict.counterexample
            assert cex is not None and cex.replayed and p.box.contains(cex.x)
            assert p.violation(cex.y) <= 0
    # lanes of solved problems went to the unsolved ones: those got more samples
    assert all(outs[2 * k + 1].samples > outs[2 * k].samples for k in range(3))
    assert fuzzer.failed_replays == 0


def test_instances_over_several_networks_are_grouped_and_stacked(tmp_path) -> None:
    models_nets = [planted(s) for s in (5, 6)]
    oracles = [export(m, 3, tmp_path / f"n{k}.onnx") for k, (m, _) in enumerate(models_nets)]
    other_model, other = planted(7, hidden=8)
    oracles.append(export(other_model, 3, tmp_path / "other.onnx"))
    nets = [n for _, n in models_nets] + [other]
    b = box([-1, -1, -1], [1, 1, 1])
    instances, expect = [], []
    for net, oracle in zip(nets, oracles):
        lo, hi = output_range(net, b, [1.0, -1.0])
        instances.append(Instance(threshold_problem(net, b, [1.0, -1.0], lo + 0.05 * (hi - lo)), oracle))
        expect.append(Status.VIOLATED)
        instances.append(Instance(threshold_problem(net, b, [1.0, -1.0], lo - 1.0), oracle))
        expect.append(Status.UNKNOWN)
    verdicts = fuzz_instances(instances, Budget.seconds(30),
                              FuzzOptions(batch=192, pgd_steps=8, max_samples=192 * 40, first_slice_steps=4))
    assert [v.status for v in verdicts] == expect
    for inst, v in zip(instances, verdicts):
        if v.status is Status.VIOLATED:
            assert v.counterexample is not None and v.counterexample.replayed
            assert inst.problem.violation(inst.oracle.run(v.counterexample.x)) <= 0
    outs = fuzz_grouped([i.problem for i in instances], Budget.seconds(30),
                        FuzzOptions(batch=96, max_samples=96 * 20))
    assert [o.index for o in outs] == list(range(len(instances)))


def test_replay_failure_is_logged_and_search_goes_on(caplog) -> None:
    _, net = planted(8)
    b = box([-1, -1, -1], [1, 1, 1])
    lo, hi = output_range(net, b, [1.0, 0.0])
    problem = threshold_problem(net, b, [1.0, 0.0], lo + 0.2 * (hi - lo))

    class Liar:  # an oracle that disagrees with the IR: every output is safe
        def run(self, x: np.ndarray) -> np.ndarray:
            return np.full(2, 1e9)

    with caplog.at_level("WARNING"):
        [out] = fuzz_many([problem], Budget.seconds(20), FuzzOptions(batch=64, pgd_steps=4, max_samples=64 * 12),
                          lambda i: Liar())
    assert out.verdict.status is Status.UNKNOWN
    assert any("does not replay" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- the CLI
def test_cli_instances_writes_json_lines(tmp_path, capsys) -> None:
    import argparse

    from certify.commands import fuzz as fuzz_cmd

    model, net = planted(9)
    export(model, 3, tmp_path / "net.onnx")
    b = box([-1, -1, -1], [1, 1, 1])
    lo, hi = output_range(net, b, [1.0, -1.0])
    decl = "".join(f"(declare-const X_{i} Real)\n" for i in range(3))
    decl += "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
    ins = "".join(f"(assert (>= X_{i} -1.0))\n(assert (<= X_{i} 1.0))\n" for i in range(3))
    (tmp_path / "sat.vnnlib").write_text(decl + ins + f"(assert (<= (- Y_0 Y_1) {lo + 0.05 * (hi - lo)!r}))\n")
    (tmp_path / "unsat.vnnlib").write_text(decl + ins + f"(assert (<= (- Y_0 Y_1) {lo - 1.0!r}))\n")
    (tmp_path / "list.csv").write_text("net.onnx,sat.vnnlib,60\nnet.onnx,unsat.vnnlib,60\n")
    parser = argparse.ArgumentParser()
    fuzz_cmd.register(parser.add_subparsers())
    out = tmp_path / "out.jsonl"
    args = parser.parse_args(["fuzz", "--instances", str(tmp_path / "list.csv"), "--budget", "3",
                              "--results", str(out), "--device", "cpu", "--batch", "128"])
    assert args.func(args) == 1
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["vnnlib"], r["status"], r["engine"]) for r in records] == [
        ("sat.vnnlib", "violated", "fuzz"), ("unsat.vnnlib", "unknown", "fuzz")]
    assert len(records[0]["counterexample"]["x"]) == 3 and len(records[0]["counterexample"]["y"]) == 2
    assert records[1]["counterexample"] is None
    args = parser.parse_args(["fuzz", str(tmp_path / "net.onnx"), str(tmp_path / "unsat.vnnlib"), "--budget", "0.5",
                              "--device", "cpu", "--batch", "64"])
    assert args.func(args) == 3


def test_auto_batch_shrinks_with_the_network_and_stays_a_power_of_two_in_range():
    from certify.fuzz.options import AUTO_BATCH_RANGE, auto_batch, macs_per_sample

    g = torch.Generator().manual_seed(0)
    sizes = [(5, 50), (784, 256), (784, 1024), (784, 4096)]
    nets = [mlp([linear(i, h, g), linear(h, h, g), linear(h, 10, g)]) for i, h in sizes]
    macs = [macs_per_sample(n) for n in nets]
    batches = [auto_batch(n) for n in nets]
    assert macs == sorted(macs) and macs[0] >= 5 * 50 + 50 * 50 + 50 * 10
    assert batches == sorted(batches, reverse=True) and batches[0] > batches[-1]
    lo, hi = AUTO_BATCH_RANGE
    assert all(lo <= b <= hi and b & (b - 1) == 0 for b in batches)
    assert batches[0] == hi and batches[-1] == lo
    assert FuzzOptions().batch_for(nets[1]) == batches[1] and FuzzOptions(batch=77).batch_for(nets[1]) == 77
