"""The field types and checks the property kinds share: inputs, bounds, ranges, labels,
targets and radii, the output selector and the input-box mixin, and :func:`as_array`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

_NUMBER_ARRAY_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"anyOf": [{"type": "number"}, {"type": "array"}]},
    "description": "a (nested) list of numbers, any rectangular shape",
}


#: File types an input may be read from (``.npz`` may name its array as ``file.npz:key``).
INPUT_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".pgm", ".ppm", ".pnm")

_INPUT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string",
         "description": "a .npy / .npz (file.npz or file.npz:key) / PGM / PPM file, relative to the spec file"},
        _NUMBER_ARRAY_SCHEMA,
    ]
}

#: An input array: inline (nested) numbers or a file path (checked by :func:`check_input_ref`).
InputRef = Annotated[Union[str, list[Any]], WithJsonSchema(_INPUT_SCHEMA)]

_BOUND_SCHEMA: dict[str, Any] = {"anyOf": [{"type": "number"}, _NUMBER_ARRAY_SCHEMA]}

#: A number (broadcast to the input shape) or an input-shaped array.
Bound = Annotated[Union[float, list[Any]], WithJsonSchema(_BOUND_SCHEMA)]


def input_path(value: str) -> tuple[str, str | None]:
    """``'a.npz:key'`` -> ``('a.npz', 'key')``; other paths -> ``(path, None)``."""
    head, sep, key = value.rpartition(":")
    if sep and head.lower().endswith(".npz") and key:
        return head, key
    return value, None


def check_input_ref(value: Any) -> Any:
    """An input is a non-empty rectangular list of finite numbers or a readable file's path."""
    if isinstance(value, str):
        path, _ = input_path(value)
        if not path.lower().endswith(INPUT_SUFFIXES):
            raise ValueError(
                f"a path must name a {', '.join(INPUT_SUFFIXES)} file, got {value!r} "
                "(PNG/JPEG are not read: convert to .npy or PGM/PPM)"
            )
        return value
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of numbers or the path of a .npy/.npz/PGM/PPM file")
    as_array(value)
    return value


def check_bound(value: Any) -> Any:
    """A bound is one finite number or a rectangular list of them."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number or a list of numbers, got {value!r}")
    if isinstance(value, (int, float)):
        if not np.isfinite(value):
            raise ValueError("must be finite")
        return float(value)
    if isinstance(value, list) and value:
        as_array(value)
        return value
    raise ValueError(f"must be a number or a non-empty list of numbers, got {value!r}")


def _check_range(value: tuple[float, float]) -> tuple[float, float]:
    if not value[0] <= value[1]:
        raise ValueError(f"needs lo <= hi, got [{value[0]}, {value[1]}]")
    return value


_Finite = Annotated[float, Field(allow_inf_nan=False)]
#: A closed interval ``[lo, hi]`` with ``lo <= hi``.
Range = Annotated[tuple[_Finite, _Finite], AfterValidator(_check_range)]
#: An output index (an integer >= 0).
Index = Annotated[int, Field(ge=0, strict=True)]


def _check_label(value: Any) -> Any:
    if value == "predicted" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ValueError(f"must be a class index (an integer >= 0) or 'predicted', got {value!r}")


def _check_targets(value: Any) -> Any:
    if value is None:
        return value
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise ValueError(f"must be a list of class indices (integers >= 0), got {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"has repeated classes: {value}")
    return value


def _check_radius(value: Any) -> Any:
    if isinstance(value, list):
        array = as_array(value) if value else None
        if array is None or np.any(array < 0):
            raise ValueError("per-feature radii must be a non-empty list of numbers >= 0")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"Input should be a valid number or a list of numbers, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError("Input should be a valid number, unable to parse string as a number") from None
    if not np.isfinite(number):
        raise ValueError("Input should be a finite number")
    if number <= 0:
        raise ValueError("Input should be greater than 0")
    return number


#: A radius: one number > 0 or per-feature radii >= 0 (a nested list).
Radius = Annotated[Union[float, list[Any]], BeforeValidator(_check_radius),
                   WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0}, _NUMBER_ARRAY_SCHEMA]})]

Label = Annotated[Union[Annotated[int, Field(ge=0)], Literal["predicted"]], BeforeValidator(_check_label)]
Targets = Annotated[Union[list[Annotated[int, Field(ge=0)]], None], BeforeValidator(_check_targets)]

_LABEL_DOC = "the class that must win; 'predicted' = the model's prediction at the (unperturbed) input"
_TARGETS_DOC = "only these wrong classes count (targeted); default: all others"


def _label_not_target(label: Any, targets: list[int] | None) -> None:
    if isinstance(label, int) and targets and label in targets:
        raise ValueError(f"@targets: contains the label {label} itself")


class OutputSelector(BaseModel):
    """The scalar a property talks about: one output ``y[output]`` or a margin ``y[i] - y[j]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output: Index | None = Field(default=None, description="an output index: the score y[output]")
    margin: tuple[Index, Index] | None = Field(
        default=None, description="[i, j]: the logit margin y[i] - y[j]")

    @model_validator(mode="after")
    def _one_of(self) -> OutputSelector:
        if (self.output is None) == (self.margin is None):
            raise ValueError("@output: give exactly one of 'output' or 'margin'")
        if self.margin is not None and self.margin[0] == self.margin[1]:
            raise ValueError(f"@margin: needs two different outputs, got {list(self.margin)}")
        return self

    def indices(self) -> tuple[int, ...]:
        return (self.output,) if self.output is not None else tuple(self.margin or ())

    def row(self, n_out: int) -> np.ndarray:
        """The selected scalar as a row vector ``c`` with ``c @ y`` = the score."""
        c = np.zeros(n_out)
        if self.output is not None:
            c[self.output] = 1.0
        elif self.margin is not None:
            c[self.margin[0]], c[self.margin[1]] = 1.0, -1.0
        return c

    def describe(self) -> str:
        return f"y[{self.output}]" if self.output is not None else f"y[{self.margin[0]}] - y[{self.margin[1]}]"  # type: ignore[index]


class _RegionMixin(BaseModel):
    """An input box, given as ``lower``/``upper`` or as ``input`` +- ``eps`` (within ``clip``)."""

    @model_validator(mode="after")
    def _region(self) -> Any:
        explicit = self.lower is not None or self.upper is not None  # type: ignore[attr-defined]
        ball = self.input is not None or self.eps is not None  # type: ignore[attr-defined]
        if explicit and ball:
            raise ValueError("@lower: give the input box either as 'lower'/'upper' or as 'input'/'eps', not both")
        if explicit and (self.lower is None or self.upper is None):  # type: ignore[attr-defined]
            raise ValueError("@upper: 'lower' and 'upper' go together")
        if ball and (self.input is None or self.eps is None):  # type: ignore[attr-defined]
            raise ValueError("@eps: 'input' and 'eps' go together")
        if not explicit and not ball:
            raise ValueError("@lower: required: an input box as 'lower' and 'upper', or 'input' and 'eps'")
        return self


def as_array(values: Sequence[Any]) -> np.ndarray:
    """A nested list of numbers as a float64 array; ``ValueError`` if ragged or not finite."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ValueError("must be a rectangular (nested) list of numbers") from exc
    if not np.all(np.isfinite(array)):
        raise ValueError("must contain only finite numbers")
    return array
