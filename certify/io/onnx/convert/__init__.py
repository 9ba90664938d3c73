"""ONNX op -> canonical IR nodes: one converter per ONNX op type, in :data:`CONVERTERS`.

A converter handles a node with at least one input computed from the network input (nodes over
constants only are folded, :mod:`certify.io.onnx.fold`).  Ops with a direct IR equivalent map
onto it; the others are rewritten into IR ops whose meaning is the same:

* ``Div`` by a value: ``x * reciprocal(y)``; ``Pow`` with an integer exponent: ``pow`` (and
  ``reciprocal`` for negative exponents);
* ``Max`` / ``Min`` / ``Clip`` / ``Abs``: ``relu`` of differences (``max(a, b) = b + relu(a - b)``);
* ``ReduceMean``: ``reduce_sum`` then a scale; ``Split``: slices; ``Slice`` with steps: ``gather``;
* ``Resize`` / ``Upsample`` in nearest mode by integer factors: ``upsample``;
* broadcasting of every elementwise op: ``expand`` of the smaller operand, constants included.

Ops whose result selects data by comparing values computed from the input (``ArgMax``,
``Where`` and comparisons on such values, ``Gather`` with computed indices, casts of such values
to integers) have no sound linear relaxation here: they are rejected with the reason.
"""

from __future__ import annotations

from certify.io.onnx.convert import elementwise, layout, products
from certify.io.onnx.convert.common import Converter
from certify.io.onnx.convert.elementwise import FLOAT_TYPES

__all__ = ["CONVERTERS", "FLOAT_TYPES", "Converter"]

CONVERTERS: dict[str, Converter] = {**elementwise.CONVERTERS, **products.CONVERTERS, **layout.CONVERTERS}
"""ONNX op type -> converter for nodes with at least one input computed from the network
input.  Nodes whose inputs are all constant are folded instead (any standard op)."""
