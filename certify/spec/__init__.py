"""Property kinds: what a user asks certify to prove, as validated pydantic models.

A spec document is either one property (a mapping with a ``kind``) or a mapping with a
``properties:`` list of them.  Each kind is a model with ``extra="forbid"`` and a literal
``kind`` tag; :data:`Property` is the discriminated union of all kinds, so adding a kind
means adding a model to :data:`PROPERTY_TYPES` and a lowering to
:data:`certify.lower.LOWERINGS`.

This package only describes and validates; reading files is :mod:`certify.io.yaml`, turning a
property into :class:`certify.problem.Problem` s is :mod:`certify.lower`.  The shared field
types and checks are in :mod:`certify.spec.field`, the kinds and the document in
:mod:`certify.spec.kind`, and the rewriting of pydantic's validation errors into the user's
field paths and short sentences in :mod:`certify.spec.error`; every public name is
re-exported here.
"""

from __future__ import annotations

from certify.spec.error import describe_errors, error_message, error_path, format_path
from certify.spec.field import (
    INPUT_SUFFIXES,
    Bound,
    Index,
    InputRef,
    Label,
    OutputSelector,
    Radius,
    Range,
    Targets,
    as_array,
    check_bound,
    check_input_ref,
    input_path,
)
from certify.spec.kind import (
    KINDS,
    PROPERTY_TYPES,
    BlurTolerance,
    BrightnessContrast,
    Document,
    Envelope,
    Kernel,
    LocalRobustness,
    Monotonicity,
    OutputBound,
    OutputRange,
    Property,
    PropertyBase,
    PropertyList,
    SpecDocument,
    VnnLib,
    json_schema,
    parse_document,
)

__all__ = [
    "INPUT_SUFFIXES",
    "KINDS",
    "PROPERTY_TYPES",
    "BlurTolerance",
    "Bound",
    "BrightnessContrast",
    "Document",
    "Envelope",
    "Index",
    "InputRef",
    "Kernel",
    "Label",
    "LocalRobustness",
    "Monotonicity",
    "OutputBound",
    "OutputRange",
    "OutputSelector",
    "Property",
    "PropertyBase",
    "PropertyList",
    "Radius",
    "Range",
    "SpecDocument",
    "Targets",
    "VnnLib",
    "as_array",
    "check_bound",
    "check_input_ref",
    "describe_errors",
    "error_message",
    "error_path",
    "format_path",
    "input_path",
    "json_schema",
    "parse_document",
]
