"""Engine options from plain mappings (a preset's YAML), checked against the option type.

Every engine's options are a frozen dataclass; :func:`from_mapping` builds one from a mapping,
recursing into nested option groups, and refuses unknown keys, values of the wrong type and
values outside a ``Literal`` with one :class:`~certify.errors.UsageError` naming the option's
path (``bab.relu.batch_size``).  :func:`describe` lists a type's options with their defaults
and documentation (``certify engines --options NAME``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from certify.errors import UsageError

__all__ = ["describe", "from_mapping"]

T = TypeVar("T")


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, where: str) -> T:
    """An instance of the dataclass ``cls`` from ``data`` (missing keys keep their defaults).
    ``where`` names the options in error messages (e.g. ``bab``)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise UsageError(f"{where}: options must be a mapping, not {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise UsageError(f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values = {key: _value(hints[key], value, f"{where}.{key}") for key, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where}: {exc}") from None


def _value(hint: Any, value: Any, where: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise UsageError(f"{where}: {value!r} is not one of {', '.join(repr(c) for c in choices)}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _value(arg, value, where)
            except UsageError:
                continue
        raise UsageError(f"{where}: {value!r} is not a {_name(hint)}")
    if hint is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{where}: {value!r} is not true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{where}: {value!r} is not an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{where}: {value!r} is not a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UsageError(f"{where}: {value!r} is not a string")
        return value
    return value  # other types (mappings, tuples) are checked by the options class itself


def _name(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(hint))
    if origin in (Union, types.UnionType):
        return " | ".join(_name(a) for a in get_args(hint))
    return getattr(hint, "__name__", str(hint))


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(path, type, default)`` for every option of ``cls``, nested groups flattened."""
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hint):
            rows += describe(hint, path + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
        rows.append((path, _name(hint), repr(default)))
    return rows
