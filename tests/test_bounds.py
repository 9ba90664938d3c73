"""Soundness of IBP, CROWN and alpha-CROWN on random small nets (dense and conv).

Invariants: sampled outputs lie within the bounds; a point box gives the forward pass;
alpha-CROWN is never looser than CROWN; CROWN's intermediate bounds contain every sample.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from certify.bounds import (
    AlphaOptions,
    Bounds,
    alpha_crown_objective,
    crown_bounds,
    crown_objective,
    ibp,
    ibp_objective,
)
from certify.network import Network, Node, Op

ACTS = [Op.RELU, Op.SIGMOID, Op.TANH]
TOL = 1e-8


def dense_net(seed: int, sizes: list[int], act: Op) -> Network:
    g = torch.Generator().manual_seed(seed)
    nodes = [Node("x", Op.INPUT, (), (sizes[0],))]
    prev = "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = torch.randn(a, b, generator=g, dtype=torch.float64) * 1.5 / math.sqrt(a)
        bias = torch.randn(b, generator=g, dtype=torch.float64) * 0.3
        nodes.append(Node(f"lin{i}", Op.LINEAR, (prev,), (b,), {"weight": w, "bias": bias}))
        prev = f"lin{i}"
        if i < len(sizes) - 2:
            nodes.append(Node(f"act{i}", act, (prev,), (b,)))
            prev = f"act{i}"
    return Network(tuple(nodes), prev)


def conv_net(seed: int, act: Op, pool: Op) -> Network:
    """conv(3x3, pad 1) -> act -> pool -> affine -> conv(stride 2) -> act -> residual add -> reshape -> linear."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    nodes = [
        Node("x", Op.INPUT, (), (1, 6, 6)),
        Node("c1", Op.CONV, ("x",), (3, 6, 6), {"weight": r(3, 1, 3, 3) * 0.5, "bias": r(3) * 0.1},
             {"stride": (1, 1), "padding": (1, 1, 1, 1), "dilation": (1, 1), "groups": 1}),
        Node("a1", act, ("c1",), (3, 6, 6)),
    ]
    pool_attrs = {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0, 0, 0)}
    if pool is Op.AVGPOOL:
        pool_attrs["count_include_pad"] = True
    nodes += [
        Node("p1", pool, ("a1",), (3, 3, 3), {}, pool_attrs),
        Node("bn", Op.AFFINE, ("p1",), (3, 3, 3), {"scale": r(3, 1, 1).abs() + 0.5, "shift": r(3, 1, 1) * 0.1}),
        Node("c2", Op.CONV, ("bn",), (3, 3, 3), {"weight": r(3, 3, 3, 3) * 0.4, "bias": r(3) * 0.1},
             {"stride": (1, 1), "padding": (1, 1, 1, 1), "dilation": (1, 1), "groups": 1}),
        Node("a2", act, ("c2",), (3, 3, 3)),
        Node("res", Op.ADD, ("a2", "bn"), (3, 3, 3)),
        Node("flat", Op.RESHAPE, ("res",), (27,), {}, {"shape": (27,)}),
        Node("out", Op.LINEAR, ("flat",), (4,), {"weight": r(27, 4) * 0.3, "bias": r(4) * 0.1}),
    ]
    return Network(tuple(nodes), "out")


def random_box(seed: int, shape: tuple[int, ...], radius: float) -> tuple[torch.Tensor, Bounds]:
    g = torch.Generator().manual_seed(seed + 1)
    center = torch.randn(1, *shape, generator=g, dtype=torch.float64)
    return center, Bounds(center - radius, center + radius)


def samples(center: torch.Tensor, radius: float, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 2)
    u = torch.rand(n, *center.shape[1:], generator=g, dtype=torch.float64) * 2 - 1
    corners = torch.sign(u[: n // 4])  # include box corners
    return center + radius * torch.cat([u[n // 4:], corners])


def objective(n_out: int) -> torch.Tensor:
    eye = torch.eye(n_out, dtype=torch.float64)
    return torch.cat([eye, -eye]).unsqueeze(0)


def check_sound(net: Network, center: torch.Tensor, box: Bounds, radius: float, seed: int) -> None:
    xs = samples(center, radius, 400, seed)
    values = net.forward_all(xs)
    ys = values[net.output].flatten(1)
    c = objective(ys.shape[1])
    true_min = (ys @ c[0].T).min(0).values
    b_ibp = ibp(net, box)
    b_crown = crown_bounds(net, box)
    lo_ibp = ibp_objective(net, b_ibp, c)[0]
    lo_crown = crown_objective(net, b_crown, c).lower[0]
    best, _ = alpha_crown_objective(net, b_crown, c, AlphaOptions(iterations=8))
    lo_alpha = best.lower[0]
    shared, _ = alpha_crown_objective(net, b_crown, c, AlphaOptions(iterations=8, shared=True))
    assert torch.all(shared.lower[0] <= true_min + TOL)
    assert torch.all(shared.lower[0] >= lo_crown - TOL)
    if c.dtype == torch.float64:  # slopes searched in float32, the bound computed in float64
        cast, _ = alpha_crown_objective(net, b_crown, c, AlphaOptions(iterations=8, search_dtype=torch.float32))
        assert cast.lower.dtype == torch.float64 and cast.A.dtype == torch.float64
        assert torch.all(cast.lower[0] <= true_min + TOL)
        assert torch.all(cast.lower[0] >= lo_crown)  # per row, never looser than CROWN
    assert torch.all(lo_ibp <= true_min + TOL)
    assert torch.all(lo_crown <= true_min + TOL)
    assert torch.all(lo_alpha <= true_min + TOL)
    assert torch.all(lo_alpha >= lo_crown - TOL)  # never looser than CROWN
    for name, b in b_crown.items():  # intermediate bounds contain every sample
        v = values[name]
        assert torch.all(b.lower[0] <= v.min(0).values + TOL), name
        assert torch.all(b.upper[0] >= v.max(0).values - TOL), name


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), act=st.sampled_from(ACTS), radius=st.floats(0.01, 2.0),
       depth=st.integers(1, 3), width=st.integers(2, 12))
def test_dense_bounds_are_sound(seed: int, act: Op, radius: float, depth: int, width: int) -> None:
    sizes = [3] + [width] * depth + [2]
    net = dense_net(seed, sizes, act)
    center, box = random_box(seed, (3,), radius)
    check_sound(net, center, box, radius, seed)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), act=st.sampled_from(ACTS), pool=st.sampled_from([Op.MAXPOOL, Op.AVGPOOL]),
       radius=st.floats(0.01, 1.0))
def test_conv_bounds_are_sound(seed: int, act: Op, pool: Op, radius: float) -> None:
    net = conv_net(seed, act, pool)
    center, box = random_box(seed, (1, 6, 6), radius)
    check_sound(net, center, box, radius, seed)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), act=st.sampled_from(ACTS), conv=st.booleans())
def test_point_box_gives_forward_pass(seed: int, act: Op, conv: bool) -> None:
    net = conv_net(seed, act, Op.MAXPOOL) if conv else dense_net(seed, [4, 8, 8, 3], act)
    center, _ = random_box(seed, net.input_shape, 0.0)
    box = Bounds(center, center.clone())
    y = net(center).flatten(1)
    for b in (ibp(net, box), crown_bounds(net, box)):
        out = b[net.output]
        assert torch.allclose(out.lower.flatten(1), y, atol=1e-5)
        assert torch.allclose(out.upper.flatten(1), y, atol=1e-5)
    c = objective(y.shape[1])
    lo = crown_objective(net, crown_bounds(net, box), c).lower[0]
    assert torch.allclose(lo, (y @ c[0].T)[0], atol=1e-5)


def test_crown_tighter_than_ibp_on_a_deep_relu_net() -> None:
    net = dense_net(7, [5, 30, 30, 30, 4], Op.RELU)
    _, box = random_box(7, (5,), 0.3)
    c = objective(4)
    w_ibp = -ibp_objective(net, ibp(net, box), c).sum()
    bounds = crown_bounds(net, box)
    w_crown = -crown_objective(net, bounds, c).lower.sum()
    w_alpha = -alpha_crown_objective(net, bounds, c, AlphaOptions(iterations=20))[0].lower.sum()
    assert w_alpha <= w_crown < w_ibp


def test_batched_boxes_match_single_boxes() -> None:
    net = dense_net(3, [3, 10, 10, 2], Op.RELU)
    boxes = [random_box(s, (3,), 0.4)[1] for s in range(4)]
    batch = Bounds(torch.cat([b.lower for b in boxes]), torch.cat([b.upper for b in boxes]))
    c = objective(2)
    together = crown_objective(net, crown_bounds(net, batch), c.expand(4, -1, -1)).lower
    for k, b in enumerate(boxes):
        alone = crown_objective(net, crown_bounds(net, b), c).lower[0]
        assert torch.allclose(together[k], alone, atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), radius=st.floats(0.05, 2.0), depth=st.integers(2, 4), width=st.integers(3, 12),
       search32=st.booleans())
def test_alpha_crown_intermediate_bounds_are_sound_and_never_looser(seed: int, radius: float, depth: int,
                                                                    width: int, search32: bool) -> None:
    from certify.bounds import alpha_crown_bounds

    net = dense_net(seed, [3] + [width] * depth + [2], Op.RELU)
    center, box = random_box(seed, (3,), radius)
    values = net.forward_all(samples(center, radius, 400, seed))
    crown = crown_bounds(net, box)
    options = AlphaOptions(iterations=10, search_dtype=torch.float32 if search32 else None)
    tight = alpha_crown_bounds(net, box, options, crown)
    for name, b in tight.items():
        v = values[name].flatten(1)
        assert torch.all(b.lower.flatten(1)[0] <= v.min(0).values + TOL), name
        assert torch.all(b.upper.flatten(1)[0] >= v.max(0).values - TOL), name
        assert torch.all(b.lower >= crown[name].lower - TOL) and torch.all(b.upper <= crown[name].upper + TOL)


def test_alpha_crown_intermediate_bounds_tighten_a_deep_relu_net() -> None:
    from certify.bounds import alpha_crown_bounds

    net = dense_net(7, [3, 16, 16, 16, 16, 2], Op.RELU)
    center, box = random_box(7, (3,), 1.0)
    crown = crown_bounds(net, box)
    tight = alpha_crown_bounds(net, box, AlphaOptions(iterations=20), crown)
    gain = sum(float((crown[n].upper - crown[n].lower).sum() - (tight[n].upper - tight[n].lower).sum())
               for n in crown)
    assert gain > 0


def test_alpha_crown_slopes_give_crown_node_the_bounds_alpha_crown_found() -> None:
    """The slopes ``alpha_crown_layers`` returns for a node, gathered per neuron and per box
    (domains in another box order, boxes repeated), make ``crown_node`` reproduce the bounds
    alpha-CROWN found for that node's unstable neurons; CROWN's default slopes do not."""
    from certify.bounds import alpha_crown_layers, crown_node

    net = dense_net(11, [3, 16, 16, 16, 2], Op.RELU)
    boxes = [random_box(seed, (3,), 0.5)[1] for seed in (11, 12)]
    box = Bounds(torch.cat([b.lower for b in boxes]), torch.cat([b.upper for b in boxes]))
    crown = crown_bounds(net, box)
    tight, slopes = alpha_crown_layers(net, box, AlphaOptions(iterations=15), crown)
    assert set(slopes) == {"lin1", "lin2"}
    # Some neurons are stable, and the two boxes bound different ones (and pad their rows).
    assert all(f.rows.shape[1] < 16 and not torch.equal(f.rows[0], f.rows[1]) for f in slopes.values())
    domains = torch.tensor([1, 0, 1])
    gain = 0.0
    for name, found in slopes.items():
        node = net.node(name)
        # Every other node has its tightened bounds; this one its loose CROWN bounds, so the
        # intersection inside crown_node does not hide what the slopes give.
        bounds = {k: Bounds(v.lower[domains], v.upper[domains]) for k, v in tight.items()}
        bounds[name] = Bounds(crown[name].lower[domains], crown[name].upper[domains])
        with_slopes = crown_node(net, node, bounds, {Op.RELU}, slopes=lambda idx: found.gather(idx, domains))
        default = crown_node(net, node, bounds, {Op.RELU})
        want = Bounds(tight[name].lower[domains], tight[name].upper[domains])
        unstable = (want.lower < 0) & (want.upper > 0)
        assert bool(unstable.any())
        assert torch.allclose(with_slopes.lower[unstable], want.lower[unstable], atol=1e-9)
        assert torch.allclose(with_slopes.upper[unstable], want.upper[unstable], atol=1e-9)
        gain += float((want.upper - want.lower - default.upper + default.lower)[unstable].abs().sum())
    assert gain > 1e-3
