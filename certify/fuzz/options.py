"""Options of the batch fuzzer, as frozen dataclasses (no global configuration)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from certify.errors import UsageError
from certify.network import Network, Op

#: Inputs of at most this many entries get one-step episodes (see :func:`auto_episode`).
LOW_DIM_INPUTS = 16
#: Steps per episode on larger inputs.
HIGH_DIM_EPISODE = 8
#: An automatic batch makes one pass cost about this many multiply-adds (forward).
AUTO_BATCH_MACS = 2**28
AUTO_BATCH_RANGE = (256, 4096)
#: ... and gives no more than this many lanes per problem: one problem is found sooner by more,
#: shorter passes (ACAS Xu 1_9 prop_7 alone: 0.2-4.9 s with 512 lanes, 9 s or none in 10 s with 4096).
AUTO_LANES_PER_PROBLEM = 512


def macs_per_sample(network: Network) -> int:
    """Multiply-adds of one forward pass of ``network`` on one input (dense and conv layers;
    every other node counts its output size)."""
    total = 0
    for node in network.nodes[1:]:
        weight = node.params.get("weight")
        if node.op is Op.LINEAR and weight is not None:
            total += weight.numel()
        elif node.op is Op.CONV and weight is not None:
            total += weight.numel() * math.prod(node.shape[1:])
        else:
            total += node.size
    return max(1, total)


def auto_batch(network: Network, problems: int | None = None) -> int:
    """Lanes per pass for ``network`` when none is set: the power of two nearest to
    ``AUTO_BATCH_MACS / macs_per_sample``, at most ``AUTO_LANES_PER_PROBLEM`` per problem when
    ``problems`` is given, within ``AUTO_BATCH_RANGE``.  Small nets (ACAS Xu) get 4096 lanes
    for many problems; MNIST-FC's 256x2 gets 1024, so a pass stays short and PGD episodes finish
    within the first second instead of after several (``benchmarks/fuzz.py``)."""
    ideal = AUTO_BATCH_MACS / macs_per_sample(network)
    if problems is not None:
        ideal = min(ideal, AUTO_LANES_PER_PROBLEM * problems)
    lo, hi = AUTO_BATCH_RANGE
    return int(min(hi, max(lo, 2 ** round(math.log2(ideal)))))


def auto_episode(network: Network) -> int:
    """Steps per episode when none is set: 1 (every sample a fresh start, no descent) for inputs
    of at most ``LOW_DIM_INPUTS`` entries, ``HIGH_DIM_EPISODE`` otherwise.  A low-dimensional box is
    covered faster by sampling and mutating seeds than by descending: on ACAS Xu (5 inputs) the
    41st violation came after 0.4-1.4 s with one-step episodes, 1.9-11.5 s with two-step ones,
    4-8 s or not within 12 s with 8-step ones and not within 12 s with 16-step ones.  On MNIST-FC
    (784 inputs) descent is what finds them: the 17th came after 0.3-0.5 s with 8-step episodes,
    0.4-0.6 s with 16 and 0.6-1.4 s with one (3 seeds each; the closing note of issue #6 has
    the runs)."""
    return 1 if network.input_size <= LOW_DIM_INPUTS else HIGH_DIM_EPISODE


@dataclass(frozen=True, slots=True)
class StrategyWeights:
    """Shares of lane-samples each strategy gets (relative; they need not sum to 1).

    ``pgd``: signed-gradient descent on the violation margin from an energy-picked seed;
    ``corners``: a vertex of the box (random, or the one the seed's gradient points to);
    ``uniform``: a fresh uniform sample of the box; ``boundary``: the seed with a random
    subset of coordinates pushed to the bound its gradient points to.  Every episode then
    descends the margin.  The defaults favour fresh uniform starts, which found the most
    ACAS Xu violations per second in ``benchmarks/fuzz.py``.
    """

    pgd: float = 0.2
    corners: float = 0.1
    uniform: float = 0.6
    boundary: float = 0.1

    def __post_init__(self) -> None:
        values = self.as_tuple()
        if any(w < 0 for w in values) or sum(values) <= 0:
            raise UsageError(f"strategy weights must be >= 0 and not all zero, got {values}")

    def as_tuple(self) -> tuple[float, float, float, float]:
        """Weights in :data:`certify.fuzz.strategies.STRATEGIES` order."""
        return (self.uniform, self.pgd, self.corners, self.boundary)


@dataclass(frozen=True, slots=True)
class FuzzOptions:
    """Knobs of the batch fuzzer.

    ``batch``: lanes per forward/backward pass (``None``: :func:`auto_batch` of the network);
    ``pgd_steps``: length of an episode (a start
    point chosen by a strategy, then signed-gradient descent; ``None``: :func:`auto_episode`
    of the network); ``reset_every``: episodes end
    only every this many steps (the bookkeeping is amortised over them);
    ``s0``: ACT's base step scale (a seed picked for the ``n``-th time gets
    ``s = 1 - (1 - s0)^(n + 1)`` of its distance to the farther bound, per dimension: the
    ``pgd`` strategy's random offset and the ``boundary`` strategy's share of moved coordinates);
    ``descent_s0``: the same rule's base for the signed-gradient steps of an episode (MNIST-FC's
    17th violation: median 0.47 s with 0.1 (5 seeds), 0.18 s with 0.5, 0.11 s with 0.7 (4 each),
    all 21 within about 1 s either way; ACAS Xu's one-step episodes do not descend, and its
    41st violation came later with ``s0`` 0.5 than with 0.1: 0.66 s against 0.38 s);
    ``pool``: seeds kept per problem; ``max_samples``: stop after this many lane-samples
    (``None``: only the budget stops it); ``first_slice_steps``: steps each network group
    gets in the first round when several groups share a budget (doubled every round);
    ``first_lanes``: lanes per problem of the first episodes (the batch then doubles every
    episode up to ``batch``; ``None``: full batch from the start).  A first sweep with one lane
    per problem costs a few milliseconds and already finds the easy violations of every problem
    (MNIST-FC: most of them; ``benchmarks/fuzz.py``).
    """

    batch: int | None = None
    weights: StrategyWeights = StrategyWeights()
    pgd_steps: int | None = None
    reset_every: int = 4
    s0: float = 0.1
    descent_s0: float = 0.7
    pool: int = 16
    seed: int = 0
    max_samples: int | None = None
    first_slice_steps: int = 8
    first_lanes: int | None = 1

    def __post_init__(self) -> None:
        if min(self.batch or 1, self.pgd_steps or 1, self.reset_every, self.pool, self.first_slice_steps,
               self.first_lanes or 1) < 1:
            raise UsageError("fuzz options batch, pgd_steps, reset_every, pool, first_slice_steps and first_lanes "
                             "must be >= 1")
        for name in ("s0", "descent_s0"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise UsageError(f"fuzz option {name} must be in (0, 1], got {getattr(self, name)}")

    def batch_for(self, network: Network, problems: int | None = None) -> int:
        """Lanes per pass on ``network`` for ``problems`` problems: ``batch``, or
        :func:`auto_batch` when unset."""
        return self.batch if self.batch is not None else auto_batch(network, problems)

    def episode_for(self, network: Network) -> int:
        """Steps per episode on ``network``: ``pgd_steps``, or :func:`auto_episode` when unset."""
        return self.pgd_steps if self.pgd_steps is not None else auto_episode(network)

    @staticmethod
    def from_mapping(options: Mapping[str, Any]) -> FuzzOptions:
        """Options from a plain mapping (a preset's YAML); ``weights`` may be a mapping too."""
        known = {f.name for f in fields(FuzzOptions)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UsageError(f"unknown fuzz option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(options)
        weights = values.get("weights")
        if isinstance(weights, Mapping):
            try:
                values["weights"] = StrategyWeights(**{k: float(v) for k, v in weights.items()})
            except TypeError as exc:
                raise UsageError(f"bad fuzz strategy weights: {exc}") from None
        return FuzzOptions(**values)
