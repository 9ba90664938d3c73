"""Options of the ``bab`` engine, in groups: the shared ones, input splitting, neuron splitting,
and input splitting's hand-over of hard sub-boxes to neuron splitting.

A preset sets them as nested mappings (``options: {mode: auto, neuron: {batch_size: 128}}``),
checked when the preset loads (:func:`certify.options.from_mapping`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

__all__ = ["BaBOptions", "HandOverOptions", "InputSplitOptions", "NeuronSplitOptions", "TightenOptions"]


@dataclass(frozen=True, slots=True)
class TightenOptions:
    """Input splitting tightens the intermediate bounds of sub-boxes CROWN did not prove by
    ``iterations`` alpha-CROWN iterations per layer (0: never); their children inherit them.
    Only sub-boxes with at least ``unstable`` unstable ReLUs, at every ``every``-th depth, with
    slopes searched in float32 when ``float32`` (the bound itself is computed in the search's
    dtype) and step ``lr``."""

    iterations: int = 5
    unstable: int = 32
    every: int = 2
    float32: bool = True
    lr: float = 0.5

    def __post_init__(self) -> None:
        if self.every < 1 or self.iterations < 0:
            raise ValueError("tighten.every must be positive and tighten.iterations not negative")


@dataclass(frozen=True, slots=True)
class InputSplitOptions:
    """``batch_size`` sub-boxes per tensor pass; ``alpha_iterations`` alpha-CROWN iterations per
    batch (0: plain CROWN); ``intermediate``: each sub-box's intermediate bounds, ``crown``
    (recomputed), ``forward`` (forward linear bounds only, not inherited), ``reuse`` (the
    parent's, intersected with interval bounds) or ``two-stage`` (reuse, then CROWN for the
    sub-boxes that were not proved); ``branching``: ``smart`` (``|A_i| * width_i`` from the
    linear bounds) or ``widest``."""

    batch_size: int = 1024
    alpha_iterations: int = 0
    intermediate: Literal["crown", "forward", "reuse", "two-stage"] = "crown"
    branching: Literal["smart", "widest"] = "smart"
    tighten: TightenOptions = field(default_factory=TightenOptions)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("input.batch_size must be positive")


@dataclass(frozen=True, slots=True)
class NeuronSplitOptions:
    """Neuron splitting (ReLUs, and any other elementwise activation) with beta-CROWN
    multipliers.

    batch_size: domains bounded per tensor pass, fewer where one pass would not fit in
    batch_memory_mb.  beta_iterations: joint alpha/beta iterations
    per batch.  intermediate_alpha_iterations: the root's intermediate bounds (which every domain
    inherits) are tightened by this many alpha-CROWN iterations per layer (0: plain CROWN).
    refine_intermediate: each domain's intermediate bounds after its newest split are recomputed
    by CROWN on its own bounds (a split neuron is exact there), before its alphas and betas are
    optimized; children inherit them.  refine_slopes: that refinement uses, per neuron, the ReLU
    slopes the root's alpha-CROWN found for it (sound for any slopes in [0, 1]).
    search_float32: alphas and betas are searched in float32 (1.4-1.6x as fast on a 2-core CPU);
    the bound that proves a domain is recomputed in the search's dtype with the slopes and
    multipliers found.  joint_share: every disjunct of the unsafe set is searched at once for
    this share of the time; if that does not settle the problem, the disjuncts are proved one
    after the other, each by a search of its own (1: joint only).  attack_restarts /
    attack_steps: the PGD attack on the root (0 disables).  leaf_lp: fully split leaves are
    decided exactly by an LP, keeping the search complete.
    """

    batch_size: int = 64
    batch_memory_mb: int = 1024
    beta_iterations: int = 24
    intermediate_alpha_iterations: int = 20
    refine_intermediate: bool = True
    refine_slopes: bool = True
    search_float32: bool = True
    joint_share: float = 0.5
    lr_beta: float = 0.1
    attack_restarts: int = 8
    attack_steps: int = 40
    leaf_lp: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("neuron.batch_size must be positive")
        if not 0.0 <= self.joint_share <= 1.0:
            raise ValueError(f"neuron.joint_share must be in [0, 1], not {self.joint_share}")


#: Neuron splitting inside handed-over sub-boxes: lighter than ReLU mode's defaults, since a handed
#: box is small (ACAS Xu 3_3 prop_2, six open boxes at depth 13-14 one at a time: all proved in
#: 1.8 s with these, 3.5 s for six others with the defaults; without tightening the intermediate
#: bounds two of six stayed open after 5 s), and wider batches, since many boxes share them.
HANDED = NeuronSplitOptions(batch_size=256, beta_iterations=10, intermediate_alpha_iterations=5)


@dataclass(frozen=True, slots=True)
class HandOverOptions:
    """Input splitting hands unproved sub-boxes at ``depth`` (and every ``every`` depths below
    it) with at most ``max_unstable`` unstable ReLUs to neuron splitting, all of a batch's at once;
    a box is given back after ``box_domains`` ReLU domains, and a hand-over takes at most
    ``seconds`` per box (``depth`` 0: never).  ``alpha_iterations`` and ``neuron``: the root
    alpha-CROWN and neuron-splitting options inside the handed boxes.  Near a thin slab where the
    property is tight, splitting a handful of ReLUs makes the bound exact where halving the box
    again barely helps (ACAS Xu 3_3 and 4_2 prop_2: proved in 41-59 s, unknown after 116 s
    before)."""

    depth: int = 12
    every: int = 3
    box_domains: int = 64
    max_unstable: int = 96
    seconds: float = 1.0
    alpha_iterations: int = 10
    neuron: NeuronSplitOptions = HANDED


@dataclass(frozen=True, slots=True)
class BaBOptions:
    """Options of the ``bab`` engine.

    mode: ``auto`` (input splitting when the input has at most ``input_dims`` entries or the net
        has no activation to split, neuron splitting otherwise), ``input`` or ``neuron``.
    max_domains: cap on open domains; past half of it the search goes depth first, at the cap it
        stops with UNKNOWN.  ``memory_mb`` lowers the cap so the pool fits in that memory.
    alpha_iterations / lr_alpha: alpha-CROWN on the root domain (both modes).
    dtype: the precision bounds are computed in (float32 only where the proof checker re-checks
        each HOLDS, see :func:`certify.bab.record.search_dtype`; float64 elsewhere).
    """

    mode: Literal["auto", "input", "neuron"] = "auto"
    input_dims: int = 16
    max_domains: int = 1_000_000
    memory_mb: int = 2048
    alpha_iterations: int = 20
    lr_alpha: float = 0.25
    dtype: Literal["float64", "float32"] = "float64"
    seed: int = 0
    input: InputSplitOptions = field(default_factory=InputSplitOptions)
    neuron: NeuronSplitOptions = field(default_factory=NeuronSplitOptions)
    hand_over: HandOverOptions = field(default_factory=HandOverOptions)

    def __post_init__(self) -> None:
        if self.max_domains < 1:
            raise ValueError("max_domains must be positive")

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32
