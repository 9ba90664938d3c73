"""One shared set of small random problems with exact ground truth.

Each :class:`Case` is a random ReLU net (``n_in`` 2-5, 1-3 hidden layers of 3-20 neurons,
2-4 outputs), a random box and a random unsafe set (1-2 disjuncts of 1-3 rows, either
"output j >= output i" rows or random half-spaces).  The right-hand sides are placed so that
every disjunct's exact worst-case margin ``t*_k = min_x max_i (A_i y - b_i)`` is a chosen
number well away from zero (``|t*| >= 0.02 * scale``): half the cases hold (every ``t*_k > 0``),
half are violated (some ``t*_k < 0``).  Shifting every ``b_i`` of a disjunct by ``c`` shifts
``t*`` by exactly ``-c``, so one exact solve per disjunct (with ``b`` at a random base value)
places it.

The exact solve is :func:`brute_force_margin` (enumerate the activation patterns of the
neurons that interval arithmetic cannot fix, one LP per linear region; independent of
``certify.encode``) when a net has at most ``BRUTE_FORCE_MAX`` such neurons, else the big-M
MILP of :mod:`tests.referee` over scipy's HiGHS (independent of certify's ``milp`` engine, which
is judged against it).  ``Case.truth_source`` records which.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from certify.network import Network, Node, Op
from certify.problem import Box, HalfSpaces, Problem
from certify.verdict import Status
from tests.referee import milp_minimum

#: Nets with at most this many interval-unstable neurons get the brute-force ground truth.
BRUTE_FORCE_MAX = 9


@dataclass(frozen=True, slots=True, eq=False)
class Case:
    problem: Problem
    expected: Status
    margins: tuple[float, ...]  # exact t*_k per disjunct (negative: that disjunct is reachable)
    truth_source: str  # "brute-force" or "scipy-milp"
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (W [n_out, n_in], b) per linear layer


def relu_network(layers: list[tuple[np.ndarray, np.ndarray]], name: str) -> Network:
    """Linear, ReLU, ..., Linear from ``(W [n_out, n_in], b)`` pairs (float32 parameters)."""
    n_in = layers[0][0].shape[1]
    nodes = [Node("x", Op.INPUT, (), (n_in,))]
    prev = "x"
    for k, (w, b) in enumerate(layers):
        lin = f"fc{k}"
        nodes.append(Node(lin, Op.LINEAR, (prev,), (w.shape[0],),
                          {"weight": torch.tensor(w.T, dtype=torch.float32),
                           "bias": torch.tensor(b, dtype=torch.float32)}))
        prev = lin
        if k < len(layers) - 1:
            nodes.append(Node(f"relu{k}", Op.RELU, (prev,), (w.shape[0],)))
            prev = f"relu{k}"
    return Network(tuple(nodes), prev, name)


def _f32(a: np.ndarray) -> np.ndarray:
    """The float32 values the network really holds, as float64."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def random_layers(rng: np.random.Generator, n_in: int, widths: list[int],
                  n_out: int) -> list[tuple[np.ndarray, np.ndarray]]:
    sizes = [n_in, *widths, n_out]
    return [(_f32(rng.normal(size=(o, i)) / np.sqrt(i)), _f32(0.3 * rng.normal(size=o)))
            for i, o in zip(sizes[:-1], sizes[1:])]


def forward(layers: tuple[tuple[np.ndarray, np.ndarray], ...] | list, x: np.ndarray) -> np.ndarray:
    """Reference forward pass in float64, ``x: [B, n_in] -> [B, n_out]``."""
    h = x
    for k, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if k < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


def _interval_unstable(layers, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
    """Per hidden layer, the phase interval arithmetic fixes: +1 active, -1 inactive, 0 unknown."""
    phases = []
    for w, b in layers[:-1]:
        c, r = (lo + hi) / 2, (hi - lo) / 2
        zc, zr = w @ c + b, np.abs(w) @ r
        zl, zu = zc - zr, zc + zr
        phases.append(np.where(zl >= 0, 1, np.where(zu <= 0, -1, 0)))
        lo, hi = np.maximum(zl, 0), np.maximum(zu, 0)
    return phases


def unstable_count(layers, box: Box) -> int:
    return int(sum((p == 0).sum() for p in _interval_unstable(layers, box.lower, box.upper)))


def brute_force_margin(layers, box: Box, hs: HalfSpaces) -> float:
    """Exact ``min_{x in box} max_i (A_i net(x) - b_i)`` by enumerating linear regions."""
    from scipy.optimize import linprog

    phases = _interval_unstable(layers, box.lower, box.upper)
    free = [(k, j) for k, p in enumerate(phases) for j in np.nonzero(p == 0)[0]]
    n_in = box.lower.size
    best = np.inf
    for signs in itertools.product((1, -1), repeat=len(free)):
        pattern = [p.copy() for p in phases]
        for (k, j), s in zip(free, signs):
            pattern[k][j] = s
        # Affine map x -> z_k = M x + c for each layer under the pattern; region constraints.
        m, c = np.eye(n_in), np.zeros(n_in)
        g_rows, h_rows = [], []
        for k, (w, b) in enumerate(layers):
            zm, zc = w @ m, w @ c + b
            if k == len(layers) - 1:
                m, c = zm, zc
                break
            s = pattern[k].astype(np.float64)
            # s = +1: z >= 0  ->  -z <= 0 ;  s = -1: z <= 0
            g_rows.append(-s[:, None] * zm)
            h_rows.append(s * zc)
            act = (s > 0).astype(np.float64)
            m, c = act[:, None] * zm, act * zc
        # variables (x, t): minimize t; A (m x + c) - b <= t
        a_out = hs.A @ m
        rows = [np.hstack([a_out, -np.ones((a_out.shape[0], 1))])]
        rhs = [hs.b - hs.A @ c]
        if g_rows:
            g = np.vstack(g_rows)
            rows.append(np.hstack([g, np.zeros((g.shape[0], 1))]))
            rhs.append(np.concatenate(h_rows))
        bounds = [(float(lo), float(hi)) for lo, hi in zip(box.lower, box.upper)] + [(None, None)]
        obj = np.zeros(n_in + 1)
        obj[-1] = 1.0
        res = linprog(obj, A_ub=np.vstack(rows), b_ub=np.concatenate(rhs), bounds=bounds, method="highs")
        if res.status == 0:
            best = min(best, float(res.fun))
    return best


def referee_margin(layers, box: Box, hs: HalfSpaces) -> float:
    """Exact ``min_{x in box} max_i (A_i net(x) - b_i)`` by the scipy big-M MILP of
    :mod:`tests.referee` (independent of every certify engine)."""
    value = milp_minimum([(w.T, b) for w, b in layers], box.lower, box.upper, hs.A, hs.b)
    if value is None:
        raise RuntimeError(f"the scipy MILP referee did not solve a ground-truth problem ({hs.A.shape[0]} rows)")
    return value


def random_case(seed: int, easy: bool = False) -> Case:
    """The case of ``seed``; ``easy``: a tiny net on a narrow box with margins of 1-2 output
    standard deviations, where even interval arithmetic proves some holding cases."""
    rng = np.random.default_rng(seed)
    tiny = easy or seed % 3 == 0
    n_in = int(rng.integers(2, 4 if tiny else 6))
    depth = int(rng.integers(1, 3 if tiny else 4))
    widths = [int(rng.integers(3, 6 if tiny else 21)) for _ in range(depth)]
    n_out = int(rng.integers(2, 5))
    layers = random_layers(rng, n_in, widths, n_out)
    center = rng.uniform(-1, 1, size=n_in)
    half = rng.uniform(0.05, 0.6 if tiny else 0.4, size=n_in) * (0.05 if easy else 1.0)
    box = Box(_f32(center - half), _f32(center + half))
    net = relu_network(layers, f"conf{seed}")
    ys = forward(layers, rng.uniform(box.lower, box.upper, size=(256, n_in)))
    scale = float(np.std(ys)) + 1e-3
    n_disj = int(rng.integers(1, 3))
    base: list[HalfSpaces] = []
    for _ in range(n_disj):
        rows = int(rng.integers(1, min(3, n_out) + 1))
        if rng.random() < 0.5:  # "output j >= output i_r" rows (robustness style)
            j = int(rng.integers(n_out))
            others = rng.choice([i for i in range(n_out) if i != j], size=min(rows, n_out - 1), replace=False)
            a = np.zeros((len(others), n_out))
            for r, i in enumerate(others):
                a[r, i], a[r, j] = 1.0, -1.0
        else:
            a = rng.normal(size=(rows, n_out))
        beta = (a @ ys.T).mean(axis=1) + rng.normal(scale=0.1 * scale, size=a.shape[0])
        base.append(HalfSpaces(_f32(a), _f32(beta)))
    use_brute = unstable_count(layers, box) <= BRUTE_FORCE_MAX
    holds = bool(rng.random() < 0.5)
    bad = int(rng.integers(n_disj))
    unsafe: list[HalfSpaces] = []
    margins: list[float] = []
    for k, hs in enumerate(base):
        if use_brute:
            t0 = brute_force_margin(layers, box, hs)
        else:
            t0 = referee_margin(layers, box, hs)
        target = float(rng.uniform(1.0, 2.0) if easy else rng.uniform(0.05, 0.4)) * scale
        if not holds and (k == bad or rng.random() < 0.3):
            target = -target
        # t*(b + c) = t0 - c, so c = t0 - target puts t* at target (float32 rounding of the
        # rhs moves it by ~1e-7, far below |target| >= 0.05 * scale).
        hs_new = HalfSpaces(hs.A, _f32(hs.b + (t0 - target)))
        t_new = target
        unsafe.append(hs_new)
        margins.append(float(t_new))
    expected = Status.HOLDS if all(m > 0 for m in margins) else Status.VIOLATED
    problem = Problem(net, box, tuple(unsafe), name=f"conformance-{'easy-' if easy else ''}{seed}")
    return Case(problem, expected, tuple(margins), "brute-force" if use_brute else "scipy-milp", tuple(layers))


def make_cases(n: int, seed: int = 0, easy: bool = False) -> list[Case]:
    """``n`` cases from consecutive seeds (deterministic)."""
    return [random_case(seed + i, easy) for i in range(n)]


#: The kinds of :func:`extreme_case`: where the extreme magnitude sits.
EXTREME_KINDS = ("box-near-float32-max", "box-negative-near-max", "huge-weights", "huge-rhs", "tiny-box-huge-bias")


def extreme_case(seed: int, kind: str) -> Problem:
    """A random ReLU net and property whose values approach float32's overflow (3.4e38): the
    float32 model yields inf or NaN where the real-valued network is finite, so no engine may
    answer HOLDS (every engine must say VIOLATED with a counterexample that replays, or UNKNOWN)."""
    rng = np.random.default_rng(seed)
    n_in, n_out = int(rng.integers(2, 5)), int(rng.integers(2, 4))
    layers = random_layers(rng, n_in, [int(rng.integers(3, 8))], n_out)
    lo, hi = np.full(n_in, -1.0), np.full(n_in, 1.0)
    if kind == "box-near-float32-max":
        lo, hi = np.full(n_in, 3.0e38), np.full(n_in, 3.4e38)
    elif kind == "box-negative-near-max":
        lo, hi = np.full(n_in, -3.4e38), np.full(n_in, 1e38)
    elif kind == "huge-weights":
        (w, b), rest = layers[0], layers[1:]
        layers = [(_f32(w * 1e37), b), *rest]
    elif kind == "tiny-box-huge-bias":
        (w, b), rest = layers[-1], layers[:-1]
        layers = [*rest, (w, _f32(b + 3e38 * np.sign(rng.normal(size=b.shape))))]
    a = rng.normal(size=(1, n_out))
    rhs = np.array([1e308 if kind == "huge-rhs" else 0.0])
    net = relu_network(layers, f"extreme-{kind}-{seed}")
    return Problem(net, Box(_f32(lo), _f32(hi)), (HalfSpaces(_f32(a), rhs),), name=f"extreme-{kind}-{seed}")
