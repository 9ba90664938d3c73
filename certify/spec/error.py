"""Pydantic validation errors rewritten for people: the user's field path and a short sentence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from certify.spec.kind import KINDS, PROPERTY_TYPES, PropertyList


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
    """The fields of the (possibly nested) model an ``extra_forbidden`` error at ``loc`` happened in."""
    model: type[BaseModel] = PropertyList
    for part in loc[:-1]:
        if part in KINDS:
            model = PROPERTY_TYPES[KINDS.index(part)]
        elif isinstance(part, str) and part in model.model_fields:
            inner = _submodel(model.model_fields[part].annotation)
            if inner is not None:
                model = inner
    return list(model.model_fields)


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``X``, ``X | None``, ``list[X]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def describe_errors(exc: ValidationError, limit: int = 3) -> list[tuple[tuple[int | str, ...], str]]:
    """``(field path, message)`` for the first ``limit`` errors of ``exc``.

    A model-level check names its field by starting its message with ``@field: ``.
    """
    out = []
    for e in exc.errors()[:limit]:
        path, message = error_path(e["loc"]), error_message(e)
        if message.startswith("@"):
            field, _, message = message[1:].partition(": ")
            path = (*path, field)
        out.append((path, message))
    return out
