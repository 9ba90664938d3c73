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


def uniform(lower: torch.Tensor, upper: torch.Tensor, rng: Rng) -> torch.Tensor:
    """A uniform sample of each lane's box."""
    u = rng.uniform(tuple(lower.shape)).to(lower.dtype)
    return project(lower + (upper - lower) * u, lower, upper)


def perturb(x: torch.Tensor, step: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
            rng: Rng) -> torch.Tensor:
    """``x`` moved by a uniform random offset in ``[-step, step]`` per dimension."""
    u = rng.uniform(tuple(x.shape)).to(x.dtype)
    return project(x + step * (2.0 * u - 1.0), lower, upper)


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


def corners(grad: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
            rng: Rng) -> torch.Tensor:
    """A vertex of each lane's box: for half of the lanes (at random) the vertex the gradient
    ``grad`` points down to, for the others a uniformly random vertex."""
    guided = rng.coins(tuple(grad.shape[:1])).to(grad.device)
    g = torch.where(guided.unsqueeze(-1), grad, torch.zeros_like(grad))
    return _descent_bound(g, lower, upper, rng)


def boundary(x: torch.Tensor, grad: torch.Tensor, scale: torch.Tensor, lower: torch.Tensor,
             upper: torch.Tensor, rng: Rng) -> torch.Tensor:
    """``x`` with each coordinate, with probability ``scale`` (``[B]``), pushed to the bound
    that descends the margin."""
    move = rng.uniform(tuple(x.shape)).to(x.device) < scale.unsqueeze(-1)
    return project(torch.where(move, _descent_bound(grad, lower, upper, rng), x), lower, upper)
