"""Mutation strategies: pure tensor functions over lanes, each returning points inside the
lanes' own boxes exactly (every result goes through :func:`project`).

All tensors are ``[B, n]`` (flattened inputs) unless stated; ``lower``/``upper`` are each lane's
float32 box (see :func:`certify.fuzz.objective.float32_box`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from certify.fuzz.rng import Rng, grouping

#: Strategy names, in the order of :meth:`certify.fuzz.options.StrategyWeights.as_tuple`.
#: ``uniform`` comes first: it is the one strategy that needs no seed (see :func:`sorted_starts`).
STRATEGIES: tuple[str, ...] = ("uniform", "pgd", "corners", "boundary")
UNIFORM, PGD, CORNERS, BOUNDARY = range(4)
def project(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """``x`` clamped into each lane's box (exact: the result's entries are in ``[lower, upper]``)."""
    return torch.maximum(torch.minimum(x, upper), lower)


def act_scale(s0: float, picks: torch.Tensor) -> torch.Tensor:
    """ACT's step scale for a seed picked for the ``picks + 1``-th time: ``1 - (1 - s0)^(picks + 1)``.

    ``picks``: ``[B]`` (times the seed was picked before) -> ``[B]``.
    """
    return 1.0 - torch.exp((picks.to(torch.float32) + 1.0) * math.log1p(-s0)) if s0 < 1.0 else \
        torch.ones(picks.shape, device=picks.device)


def act_step(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per-dimension step ``scale * max(x - lower, upper - x)``; ``scale: [B]`` -> ``[B, n]``."""
    return scale.unsqueeze(-1) * torch.maximum(x - lower, upper - x)


def starts(strategy: torch.Tensor, seed: torch.Tensor, grad: torch.Tensor, scale: torch.Tensor,
           lower: torch.Tensor, upper: torch.Tensor, rng: Rng) -> torch.Tensor:
    """Episode starts for lanes whose strategies are ``strategy: [B]`` (indices into
    :data:`STRATEGIES`), given each lane's energy-picked ``seed``, the margin's gradient
    ``grad`` there, and ACT's step ``scale: [B]``:

    - ``pgd``: the seed moved by a uniform offset in ``[-step, step]`` per dimension, ``step``
      being ACT's :func:`act_step` (then descended like every episode);
    - ``corners``: a vertex of the box: for half of these lanes (at random) the vertex the seed's
      gradient points down to, for the others a uniformly random vertex;
    - ``uniform``: a uniform sample of the box;
    - ``boundary``: the seed with each coordinate, with probability ``scale``, pushed to the
      bound that descends the margin.

    The lanes are sorted by strategy and computed by :func:`sorted_starts`.  The fuzzer draws
    the strategies before it picks the seeds and gathers the boxes, so it does both in that
    order (and picks no seed for ``uniform`` lanes) and calls :func:`sorted_starts` directly.
    """
    order, counts = grouping(strategy, len(STRATEGIES))
    seeded = order[counts[UNIFORM]:]
    x = sorted_starts(counts, seed[seeded], grad[seeded], scale[seeded], lower[order], upper[order], rng)
    out = torch.empty_like(x)
    out[order] = x
    return out


def sorted_starts(counts: Sequence[int], seed: torch.Tensor, grad: torch.Tensor, scale: torch.Tensor,
                  lower: torch.Tensor, upper: torch.Tensor, rng: Rng) -> torch.Tensor:
    """:func:`starts` for lanes sorted by strategy: the first ``counts[0]`` lanes are ``uniform``
    lanes, the next ``counts[1]`` ``pgd`` lanes and so on (:data:`STRATEGIES` order).
    ``lower``, ``upper``: ``[R, n]`` for all ``R`` lanes; ``seed``, ``grad``, ``scale``: for the
    seeded lanes only, the ``R - counts[0]`` after the ``uniform`` ones.

    Each strategy runs on its own contiguous slice of lanes, so no lane computes another
    strategy's start and nothing is selected elementwise (``torch.where`` over a random
    ``[B, n]`` mask costs as much as twenty arithmetic passes on CPU).  Every result is
    projected."""
    out = torch.empty_like(lower)
    a = 0
    for k, c in enumerate(counts):
        if c:
            s = slice(a, a + c)
            if k == UNIFORM:
                out[s] = torch.addcmul(lower[s], upper[s] - lower[s], _uniform(lower[s], rng))
            else:
                t = slice(a - counts[UNIFORM], a + c - counts[UNIFORM])
                out[s] = _SEEDED[k](seed[t], grad[t], scale[t], lower[s], upper[s], rng)
            a += c
    return project(out, lower, upper)


def _pgd_start(seed: torch.Tensor, grad: torch.Tensor, scale: torch.Tensor, lower: torch.Tensor,
               upper: torch.Tensor, rng: Rng) -> torch.Tensor:
    """``seed - step + 2 step u``."""
    step = act_step(seed, lower, upper, scale)
    return torch.addcmul(seed - step, step, _uniform(seed, rng).mul_(2.0))


def _corner_start(seed: torch.Tensor, grad: torch.Tensor, scale: torch.Tensor, lower: torch.Tensor,
                  upper: torch.Tensor, rng: Rng) -> torch.Tensor:
    """Every coordinate at a bound: for half of the lanes the bound ``grad`` descends to, for
    the others a random one."""
    guided = rng.coins(tuple(seed.shape[:1])).to(seed.device).unsqueeze(-1)
    return _descent_bound(grad * guided, lower, upper, rng)


def _boundary_start(seed: torch.Tensor, grad: torch.Tensor, scale: torch.Tensor, lower: torch.Tensor,
                    upper: torch.Tensor, rng: Rng) -> torch.Tensor:
    """Each coordinate of ``seed`` moved, with probability ``scale``, to the bound ``grad``
    descends to."""
    move = _uniform(seed, rng) < scale.unsqueeze(-1)
    return torch.where(move, _descent_bound(grad, lower, upper, rng), seed)


def _uniform(like: torch.Tensor, rng: Rng) -> torch.Tensor:
    return rng.uniform(tuple(like.shape)).to(device=like.device, dtype=like.dtype)


_SEEDED = {PGD: _pgd_start, CORNERS: _corner_start, BOUNDARY: _boundary_start}


def pgd(x: torch.Tensor, grad: torch.Tensor, step: torch.Tensor, lower: torch.Tensor,
        upper: torch.Tensor, decay: torch.Tensor | None = None) -> torch.Tensor:
    """One signed-gradient descent step on the margin, projected:
    ``x - decay * step * sign(grad)`` (``decay``: ``[B]`` per-lane factor, default 1).
    ``x`` and ``grad`` are left as they are (see :func:`pgd_`)."""
    return pgd_(x.clone(), grad.clone(), step, lower, upper, decay)


def pgd_(x: torch.Tensor, grad: torch.Tensor, step: torch.Tensor, lower: torch.Tensor,
         upper: torch.Tensor, decay: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`pgd` in place: ``x`` becomes the new point and ``grad`` is overwritten; returns ``x``.
    Each of these ``[B, n]`` passes is memory-bound on CPU, so the two saved copies count.

    A NaN gradient entry leaves its coordinate in place or makes it NaN (torch versions differ
    on ``sign(nan)``); a NaN point's margin is NaN, which never counts as a hit.
    """
    d = grad.sign_()
    if decay is not None:
        d.mul_(decay.unsqueeze(-1))
    return x.addcmul_(d, step, value=-1.0).clamp_(lower, upper)


def _descent_bound(grad: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                   rng: Rng) -> torch.Tensor:
    """Per dimension, the bound that descends the margin (``upper`` where ``grad < 0``);
    a random bound where the gradient is zero."""
    coin = rng.coins(tuple(grad.shape)).to(grad.device)
    g = torch.nan_to_num(grad)
    up = torch.where(g == 0, coin, g < 0)
    return torch.where(up, upper, lower)
