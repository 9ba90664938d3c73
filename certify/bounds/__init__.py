"""Bound propagation, each algorithm one table keyed by op.

* :mod:`~certify.bounds.interval`: interval arithmetic (IBP);
* :mod:`~certify.bounds.crown`: CROWN's backward rules and the one backward pass;
* :mod:`~certify.bounds.forward`: forward linear bounds (cheap for low-dimensional inputs);
* :mod:`~certify.bounds.intermediate`: every node's bounds (interval, tightened by CROWN);
* :mod:`~certify.bounds.alpha`: alpha-CROWN.

Shapes: a batch of ``B`` input boxes; a node of per-sample shape ``s`` has bounds ``[B, *s]``.
A linear objective over a node is a coefficient tensor ``C: [B, S, *s]`` (``S`` rows).
"""

from certify.bounds.alpha import (
                                  AlphaOptions,
                                  NodeSlopes,
                                  adam,
                                  alpha_crown_bounds,
                                  alpha_crown_layers,
                                  alpha_crown_objective,
)
from certify.bounds.crown import CROWN_RULES, RELAXED_OPS, BackwardContext, LinearBound, backward, crown_objective
from certify.bounds.forward import FORWARD_LINEAR_RULES, LinearForm
from certify.bounds.intermediate import CHUNK_BYTES, crown_bounds, crown_node, interval_exact
from certify.bounds.interval import IBP_RULES, Bounds, ibp, ibp_objective, input_bounds

__all__ = [
    "CHUNK_BYTES", "CROWN_RULES", "FORWARD_LINEAR_RULES", "IBP_RULES", "RELAXED_OPS", "AlphaOptions",
    "BackwardContext", "Bounds", "LinearBound", "LinearForm", "NodeSlopes", "adam", "alpha_crown_bounds",
    "alpha_crown_layers", "alpha_crown_objective", "backward", "crown_bounds", "crown_node", "crown_objective",
    "ibp", "ibp_objective", "input_bounds", "interval_exact",
]
