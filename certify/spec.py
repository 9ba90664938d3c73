"""Property kinds: what a user asks certify to prove, as validated pydantic models.

A spec document is either one property (a mapping with a ``kind``) or a mapping with a
``properties:`` list of them.  Each kind is a model with ``extra="forbid"`` and a literal
``kind`` tag; :data:`Property` is the discriminated union of all kinds, so adding a kind
means adding a model to :data:`PROPERTY_TYPES` and a lowering to
:data:`certify.lower.LOWERINGS`.

This module only describes and validates; reading files is :mod:`certify.io.yaml`, turning a
property into :class:`certify.problem.Problem` s is :mod:`certify.lower`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

_NUMBER_ARRAY_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"anyOf": [{"type": "number"}, {"type": "array"}]},
    "description": "a (nested) list of numbers, any rectangular shape",
}


def _kind_required(schema: dict[str, Any]) -> None:
    """``kind`` has a default (for Python callers) but a document must state it."""
    schema["required"] = ["kind", *schema.get("required", [])]


class PropertyBase(BaseModel):
    """Fields and configuration shared by every property kind."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_kind_required)

    name: str | None = Field(default=None, description="a label for reports")


class LocalRobustness(PropertyBase):
    """The predicted class is constant on an L-inf ball around ``input``.

    Violated when some ``x`` with ``|x - x0|_inf <= eps`` (and inside ``clip``) makes a
    target class score at least as high as ``label``.
    """

    kind: Literal["robustness"] = "robustness"
    input: Annotated[
        Union[str, list[Any]],
        WithJsonSchema({
            "anyOf": [
                {"type": "string", "description": "path of a .npy file, relative to the spec file"},
                _NUMBER_ARRAY_SCHEMA,
            ]
        }),
    ] = Field(description="the centre x0: inline numbers or a .npy path (relative to the spec file)")
    eps: float = Field(gt=0, allow_inf_nan=False, description="L-inf radius of the ball around x0")
    label: Union[Annotated[int, Field(ge=0)], Literal["predicted"]] = Field(
        default="predicted",
        description="the class that must win; 'predicted' = the model's prediction at x0",
    )
    clip: Union[tuple[float, float], None] = Field(
        default=None, description="input domain [lo, hi]; the ball is intersected with it"
    )
    targets: Union[list[Annotated[int, Field(ge=0)]], None] = Field(
        default=None, min_length=1,
        description="only these wrong classes count (targeted robustness); default: all others",
    )

    @field_validator("input", mode="before")
    @classmethod
    def _check_input(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.endswith(".npy"):
                raise ValueError(f"a path must name a .npy file, got {value!r}")
            return value
        if not isinstance(value, list) or not value:
            raise ValueError("must be a non-empty list of numbers or the path of a .npy file")
        as_array(value)
        return value

    @field_validator("label", mode="before")
    @classmethod
    def _check_label(cls, value: Any) -> Any:
        if value == "predicted" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return value
        raise ValueError(f"must be a class index (an integer >= 0) or 'predicted', got {value!r}")

    @field_validator("clip")
    @classmethod
    def _check_clip(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] <= value[1]:
            raise ValueError(f"needs lo <= hi, got [{value[0]}, {value[1]}]")
        return value

    @field_validator("targets", mode="before")
    @classmethod
    def _check_targets(cls, value: Any) -> Any:
        if value is None:
            return value
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
        ):
            raise ValueError(f"must be a list of class indices (integers >= 0), got {value!r}")
        if len(set(value)) != len(value):
            raise ValueError(f"has repeated classes: {value}")
        return value

    @model_validator(mode="after")
    def _label_not_target(self) -> LocalRobustness:
        if isinstance(self.label, int) and self.targets and self.label in self.targets:
            raise ValueError(f"targets contains the label {self.label} itself")
        return self


#: Every property kind, in the order the schema lists them.  Add new kinds here.
PROPERTY_TYPES: tuple[type[PropertyBase], ...] = (LocalRobustness,)

#: The names a ``kind:`` field may take.
KINDS: tuple[str, ...] = tuple(t.model_fields["kind"].default for t in PROPERTY_TYPES)

#: One property of any kind (a union discriminated by ``kind``).
Property = Annotated[Union[PROPERTY_TYPES], Field(discriminator="kind")]  # type: ignore[valid-type]


class PropertyList(BaseModel):
    """A document holding several properties."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    properties: list[Property] = Field(min_length=1)  # type: ignore[valid-type]


def _document_form(value: Any) -> str:
    return "list" if isinstance(value, dict) and "properties" in value else "single"


#: A spec document: one property, or ``properties: [...]``.
Document = Annotated[
    Union[Annotated[Property, Tag("single")], Annotated[PropertyList, Tag("list")]],
    Discriminator(_document_form),
]


@dataclass(frozen=True, slots=True)
class SpecDocument:
    """The validated properties of one spec file.

    ``base_dir`` resolves relative paths (the spec file's folder); ``source`` names the file
    in error messages.
    """

    properties: tuple[Property, ...]
    base_dir: Path = Path(".")
    source: str = "<spec>"


def parse_document(data: Any, base_dir: Path = Path("."), source: str = "<spec>") -> SpecDocument:
    """Validate plain data (as read from YAML/JSON).  Raises pydantic's ``ValidationError``."""
    parsed = TypeAdapter(Document).validate_python(data)
    props = parsed.properties if isinstance(parsed, PropertyList) else [parsed]
    return SpecDocument(tuple(props), base_dir, source)


def json_schema() -> dict[str, Any]:
    """The JSON schema of a spec document (``specs/schema.json`` is this, pretty printed)."""
    schema = TypeAdapter(Document).json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "certify spec",
        "description": "One property (a mapping with 'kind') or a mapping with a 'properties' list.",
        **schema,
    }


def as_array(values: Sequence[Any]) -> np.ndarray:
    """A nested list of numbers as a float64 array; ``ValueError`` if ragged or not finite."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ValueError("must be a rectangular (nested) list of numbers") from exc
    if not np.all(np.isfinite(array)):
        raise ValueError("must contain only finite numbers")
    return array


# ---------------------------------------------------------------------------------------
# Error messages
# ---------------------------------------------------------------------------------------

def error_path(loc: Sequence[int | str]) -> tuple[int | str, ...]:
    """The user's field path of a pydantic error location (union tags removed)."""
    parts = list(loc)
    if parts and parts[0] in ("single", "list"):  # the document form tag
        parts = parts[1:]
    out: list[int | str] = []
    for i, part in enumerate(parts):
        after_union = i == 0 or isinstance(parts[i - 1], int)
        if isinstance(part, str) and part in KINDS and after_union:
            continue  # the kind tag of the discriminated union
        out.append(part)
    return tuple(out)


def format_path(path: Sequence[int | str]) -> str:
    """``('properties', 0, 'eps')`` -> ``'properties[0].eps'``; the empty path is ``'(top level)'``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def error_message(error: dict[str, Any]) -> str:
    """One pydantic error as a short sentence (kind errors list the known kinds)."""
    known = ", ".join(KINDS)
    kind = error["type"]
    if kind == "union_tag_invalid":
        return f"unknown kind {error['ctx']['tag']!r}; known kinds: {known}"
    if kind == "union_tag_not_found":
        return f"missing field 'kind' (one of: {known})"
    if kind == "extra_forbidden":
        return f"unknown field (allowed: {', '.join(_allowed_fields(error['loc']))})"
    if kind == "missing":
        return "required field is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _allowed_fields(loc: Sequence[int | str]) -> list[str]:
    """The fields of the model an ``extra_forbidden`` error at ``loc`` happened in."""
    model: type[BaseModel] = PropertyList
    for part in loc[:-1]:
        if part in KINDS:
            model = PROPERTY_TYPES[KINDS.index(part)]
    return list(model.model_fields)


def describe_errors(exc: ValidationError, limit: int = 3) -> list[tuple[tuple[int | str, ...], str]]:
    """``(field path, message)`` for the first ``limit`` errors of ``exc``."""
    return [(error_path(e["loc"]), error_message(e)) for e in exc.errors()[:limit]]
