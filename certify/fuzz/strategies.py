"""Mutation strategies: pure tensor functions over lanes, each returning points inside the
lanes' own boxes exactly (every result goes through :func:`project`).

All tensors are ``[B, n]`` (flattened inputs) unless stated; ``lower``/``upper`` are each lane's
float32 box (see :func:`certify.fuzz.objective.float32_box`).
"""

from __future__ import annotations

import torch

from certify.fuzz.rng import Rng

#: Strategy names, in the order of :meth:`certify.fuzz.options.StrategyWeights.as_tuple`.
STRATEGIES: tuple[str, ...] = ("pgd", "corners", "uniform", "boundary")
PGD, CORNERS, UNIFORM, BOUNDARY = range(4)
#: :func:`starts` on at most this many lane-coordinates computes every strategy on every lane.
FUSE_ELEMENTS = 2**16


def project(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """``x`` clamped into each lane's box (exact: the result's entries are in ``[lower, upper]``)."""
    return torch.maximum(torch.minimum(x, upper), lower)


def act_scale(s0: float, picks: torch.Tensor) -> torch.Tensor:
    """ACT's step scale for a seed picked for the ``picks + 1``-th time: ``1 - (1 - s0)^(picks + 1)``.

    ``picks``: ``[B]`` (times the seed was picked before) -> ``[B]``.
    """
    return 1.0 - (1.0 - s0) ** (picks.to(torch.float32) + 1.0)


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
    - ``uniform``: a uniform sample of the box;
    - ``corners``: a vertex of the box: for half of these lanes (at random) the vertex the seed's
      gradient points down to, for the others a uniformly random vertex;
    - ``boundary``: the seed with each coordinate, with probability ``scale``, pushed to the
      bound that descends the margin.

    ``pgd`` and ``uniform`` are both ``a + b * u`` (:func:`_sampled`); ``corners`` is ``boundary``
    with every coordinate moved (:func:`_pushed`).  Small batches compute both families on every
    lane and select (a few whole-batch ops beat gathers there); large ones compute each family
    on its own lanes.  Every result is projected.
    """
    pushed = (strategy == CORNERS) | (strategy == BOUNDARY)
    if strategy.numel() * seed.shape[-1] <= FUSE_ELEMENTS:
        x = torch.where(pushed.unsqueeze(-1), _pushed(strategy, seed, grad, scale, lower, upper, rng),
                        _sampled(strategy, seed, scale, lower, upper, rng))
        return project(x, lower, upper)
    x = torch.empty_like(seed)
    for family, lanes in ((True, pushed.nonzero().squeeze(1)), (False, (~pushed).nonzero().squeeze(1))):
        if lanes.numel():
            k, lo, hi = strategy[lanes], lower[lanes], upper[lanes]
            x[lanes] = (_pushed(k, seed[lanes], grad[lanes], scale[lanes], lo, hi, rng) if family
                        else _sampled(k, seed[lanes], scale[lanes], lo, hi, rng))
    return project(x, lower, upper)


def _sampled(strategy: torch.Tensor, seed: torch.Tensor, scale: torch.Tensor, lower: torch.Tensor,
             upper: torch.Tensor, rng: Rng) -> torch.Tensor:
    """``pgd`` lanes: ``seed - step + 2 step u``; the others: ``lower + (upper - lower) u``."""
    is_pgd = (strategy == PGD).unsqueeze(-1)
    step = act_step(seed, lower, upper, scale)
    return torch.addcmul(torch.where(is_pgd, seed - step, lower), torch.where(is_pgd, 2.0 * step, upper - lower),
                         rng.uniform(tuple(seed.shape)).to(device=seed.device, dtype=seed.dtype))


def _pushed(strategy: torch.Tensor, seed: torch.Tensor, grad: torch.Tensor, scale: torch.Tensor,
            lower: torch.Tensor, upper: torch.Tensor, rng: Rng) -> torch.Tensor:
    """``corners`` lanes: every coordinate at a bound (half of the lanes guided by ``grad``);
    the others (``boundary``): each coordinate of ``seed`` moved there with probability ``scale``."""
    corner = (strategy == CORNERS).unsqueeze(-1)
    unguided = corner & rng.coins(tuple(seed.shape[:1])).to(seed.device).unsqueeze(-1)
    bound = _descent_bound(torch.where(unguided, torch.zeros_like(grad), grad), lower, upper, rng)
    move_p = torch.where(corner, 1.0, scale.unsqueeze(-1))  # [B, 1]
    move = rng.uniform(tuple(seed.shape)).to(seed.device) < move_p
    return torch.where(move, bound, seed)


def pgd(x: torch.Tensor, grad: torch.Tensor, step: torch.Tensor, lower: torch.Tensor,
        upper: torch.Tensor, decay: torch.Tensor | None = None) -> torch.Tensor:
    """One signed-gradient descent step on the margin, projected:
    ``x - decay * step * sign(grad)`` (``decay``: ``[B]`` per-lane factor, default 1).

    A NaN gradient makes a NaN point; its margin is NaN, which never counts as a hit.
    """
    d = grad.sgn()
    if decay is not None:
        d.mul_(decay.unsqueeze(-1))
    return torch.addcmul(x, d, step, value=-1.0).clamp_(lower, upper)


def _descent_bound(grad: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                   rng: Rng) -> torch.Tensor:
    """Per dimension, the bound that descends the margin (``upper`` where ``grad < 0``);
    a random bound where the gradient is zero."""
    coin = rng.coins(tuple(grad.shape)).to(grad.device)
    g = torch.nan_to_num(grad)
    up = torch.where(g == 0, coin, g < 0)
    return torch.where(up, upper, lower)
