"""The property kinds (one pydantic model each), the discriminated union :data:`Property`,
and the spec document that holds one or several properties."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)

from certify.spec.field import (
    _LABEL_DOC,
    _TARGETS_DOC,
    Bound,
    Index,
    InputRef,
    Label,
    OutputSelector,
    Radius,
    Range,
    Targets,
    _Finite,
    _label_not_target,
    _RegionMixin,
    as_array,
    check_bound,
    check_input_ref,
    input_path,
)


def _kind_required(schema: dict[str, Any]) -> None:
    """``kind`` has a default (for Python callers) but a document must state it."""
    schema["required"] = ["kind", *schema.get("required", [])]


class PropertyBase(BaseModel):
    """Fields and configuration shared by every property kind."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_kind_required)

    name: str | None = Field(default=None, description="a label for reports")


# ---------------------------------------------------------------------------------------
# kind: robustness
# ---------------------------------------------------------------------------------------

class LocalRobustness(PropertyBase):
    """The class stays ``label`` on a ball around ``input`` (or around each of ``samples``).

    Violated when some ``x`` of the ball (intersected with ``clip``) makes a target class
    score at least as high as ``label``.  ``norm: l2`` is checked on the L-inf box of the
    same radius (which contains the L2 ball): HOLDS is proved for the whole box, and a
    counterexample counts only if it lies inside the L2 ball.
    """

    kind: Literal["robustness"] = "robustness"
    input: Union[InputRef, None] = Field(
        default=None, description="the centre x0: inline numbers or a file (relative to the spec file)")
    samples: Union[list[InputRef], str, None] = Field(
        default=None, description="several centres (one instance each): a list of inputs, or one "
                                  ".npy/.npz file whose first axis indexes the samples")
    eps: Radius = Field(description="radius: one number > 0, or per-feature radii (>= 0) with the input's shape")
    norm: Literal["linf", "l2"] = Field(
        default="linf", description="linf (exact box) or l2 (checked on the enclosing L-inf box)")
    label: Label = Field(default="predicted", description=_LABEL_DOC)
    clip: Union[Range, None] = Field(
        default=None, description="input domain [lo, hi]; the ball is intersected with it")
    targets: Targets = Field(default=None, min_length=1, description=_TARGETS_DOC)

    @field_validator("input", mode="before")
    @classmethod
    def _check_input(cls, value: Any) -> Any:
        return None if value is None else check_input_ref(value)

    @field_validator("samples", mode="before")
    @classmethod
    def _check_samples(cls, value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, str):
            path, _ = input_path(value)
            if not path.lower().endswith((".npy", ".npz")):
                raise ValueError(f"a samples file must be .npy or .npz, got {value!r}")
            return value
        if not isinstance(value, list) or not value:
            raise ValueError("must be a non-empty list of inputs or a .npy/.npz file")
        return [check_input_ref(v) for v in value]

    @model_validator(mode="after")
    def _check_all(self) -> LocalRobustness:
        if (self.input is None) == (self.samples is None):
            raise ValueError("@input: give exactly one of 'input' or 'samples'")
        if self.norm == "l2" and isinstance(self.eps, list):
            raise ValueError("@eps: norm l2 needs one radius (a number), not per-feature radii")
        _label_not_target(self.label, self.targets)
        return self


# ---------------------------------------------------------------------------------------
# kind: output_range
# ---------------------------------------------------------------------------------------

class OutputBound(OutputSelector):
    """``min < score < max`` for one output or margin (either bound may be left out)."""

    min: Union[_Finite, None] = Field(default=None, description="the score stays above this")
    max: Union[_Finite, None] = Field(default=None, description="the score stays below this")

    @model_validator(mode="after")
    def _bounds(self) -> OutputBound:
        if self.min is None and self.max is None:
            raise ValueError("@min: give 'min', 'max' or both")
        if self.min is not None and self.max is not None and not self.min <= self.max:
            raise ValueError(f"@min: needs min <= max, got min {self.min}, max {self.max}")
        return self


class OutputRange(_RegionMixin, PropertyBase):
    """Every listed output (or margin) stays within its bounds over an input box.

    Violated when some ``x`` of the box has a score ``<= min`` or ``>= max`` for some bound
    (a score exactly on a bound counts as a violation).
    """

    kind: Literal["output_range"] = "output_range"
    lower: Union[Bound, None] = Field(default=None, description="box lower corner (number or array)")
    upper: Union[Bound, None] = Field(default=None, description="box upper corner (number or array)")
    input: Union[InputRef, None] = Field(default=None, description="box centre (with eps)")
    eps: Union[Annotated[float, Field(ge=0, allow_inf_nan=False)], None] = Field(
        default=None, description="L-inf radius around input")
    clip: Union[Range, None] = Field(default=None, description="input domain [lo, hi] (with input/eps)")
    outputs: list[OutputBound] = Field(min_length=1, description="the bounds, all of which must hold")

    _check_lower = field_validator("lower", "upper", mode="before")(
        classmethod(lambda cls, v: None if v is None else check_bound(v)))
    _check_input = field_validator("input", mode="before")(
        classmethod(lambda cls, v: None if v is None else check_input_ref(v)))


# ---------------------------------------------------------------------------------------
# kind: monotonicity
# ---------------------------------------------------------------------------------------

class Monotonicity(_RegionMixin, PropertyBase):
    """A score does not drop (``increasing``) or rise (``decreasing``) when chosen features grow.

    ``form: pairwise``: for all ``x <= x'`` in the box that differ only in ``features``,
    ``g(x) <= g(x') + tol`` (increasing) or ``g(x') <= g(x) + tol`` (decreasing).

    ``form: path`` (the veriFIRE form): the input is ``background + a * (target - background)``
    for ``a`` in ``alpha``; for every such ``a``, ``g(image(a)) >= g(image(reference)) - tol``
    (increasing) or ``<= ... + tol`` (decreasing).
    """

    kind: Literal["monotonicity"] = "monotonicity"
    form: Literal["pairwise", "path"] = Field(default="pairwise", description="pairwise or path")
    output: Union[Index, None] = Field(default=None, description="the score y[output] ...")
    margin: Union[tuple[Index, Index], None] = Field(default=None, description="... or the margin y[i] - y[j]")
    direction: Literal["increasing", "decreasing"] = Field(default="increasing")
    tol: float = Field(default=1e-4, gt=0, allow_inf_nan=False,
                       description="allowed drop (> 0: a violation must exceed it)")
    # pairwise
    features: Union[list[Annotated[int, Field(ge=0)]], None] = Field(
        default=None, min_length=1, description="pairwise: flat indices of the features that grow")
    lower: Union[Bound, None] = Field(default=None, description="pairwise: box lower corner")
    upper: Union[Bound, None] = Field(default=None, description="pairwise: box upper corner")
    input: Union[InputRef, None] = Field(default=None, description="pairwise: box centre (with eps)")
    eps: Union[Annotated[float, Field(ge=0, allow_inf_nan=False)], None] = Field(
        default=None, description="pairwise: L-inf radius around input")
    clip: Union[Range, None] = Field(default=None, description="pairwise: input domain (with input/eps)")
    max_step: Union[Annotated[float, Field(gt=0, allow_inf_nan=False)], None] = Field(
        default=None, description="pairwise: x' - x is at most this on each chosen feature")
    # path
    background: Union[float, InputRef, None] = Field(
        default=None, description="path: the image at a = 0 (a number: that value everywhere)")
    target: Union[InputRef, None] = Field(default=None, description="path: the image at a = 1")
    alpha: Range = Field(default=(0.0, 1.0), description="path: the range of a")
    reference: Union[_Finite, None] = Field(
        default=None, description="path: the a whose score is the floor (default: alpha's lo)")

    _check_lower = field_validator("lower", "upper", mode="before")(
        classmethod(lambda cls, v: None if v is None else check_bound(v)))
    _check_inputs = field_validator("input", "target", mode="before")(
        classmethod(lambda cls, v: None if v is None else check_input_ref(v)))
    _check_background = field_validator("background", mode="before")(
        classmethod(lambda cls, v: v if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                     else check_input_ref(v)))

    @field_validator("features")
    @classmethod
    def _unique(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"has repeated features: {value}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _form_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        form = data.get("form", "pairwise")
        own = {"pairwise": ("features", "lower", "upper", "input", "eps", "clip", "max_step"),
               "path": ("background", "target", "alpha", "reference")}
        for other, fields in own.items():
            if other != form:
                for f in fields:
                    if f in data and f not in own.get(form, ()):
                        raise ValueError(f"@{f}: belongs to form {other!r}, not {form!r}")
        return data

    @model_validator(mode="after")
    def _region(self) -> Monotonicity:  # replaces the mixin check: only pairwise has a box
        OutputSelector(output=self.output, margin=self.margin)
        if self.form == "pairwise":
            if self.features is None:
                raise ValueError("@features: required by form pairwise")
            _RegionMixin._region(self)
        else:
            if self.background is None or self.target is None:
                raise ValueError("@background: form path needs 'background' and 'target'")
        return self

    @property
    def selector(self) -> OutputSelector:
        return OutputSelector(output=self.output, margin=self.margin)


# ---------------------------------------------------------------------------------------
# kind: blur_tolerance
# ---------------------------------------------------------------------------------------

class Kernel(BaseModel):
    """A blur kernel family: ``gaussian`` (one sigma or a sigma range), ``box`` or ``custom``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["gaussian", "box", "custom"]
    sigma: Union[Annotated[float, Field(gt=0, allow_inf_nan=False)], Range, None] = Field(
        default=None, description="gaussian: one sigma (pixels) or a range [lo, hi]")
    steps: int = Field(default=3, ge=1, le=64,
                       description="gaussian with a sigma range: how many evenly spaced sigmas are checked")
    size: Union[Annotated[int, Field(ge=1)], None] = Field(
        default=None, description="kernel side (odd); gaussian default 2*ceil(3*sigma)+1, box: required")
    weights: Union[list[list[float]], None] = Field(
        default=None, description="custom: the kernel (odd sides), normalized to sum 1")

    @model_validator(mode="after")
    def _fields(self) -> Kernel:
        if self.size is not None and self.size % 2 == 0:
            raise ValueError(f"@size: must be odd, got {self.size}")
        if self.type == "gaussian":
            if self.sigma is None:
                raise ValueError("@sigma: required by a gaussian kernel")
            if isinstance(self.sigma, tuple) and self.sigma[0] <= 0:
                raise ValueError(f"@sigma: range must be > 0, got {list(self.sigma)}")
        elif self.type == "box":
            if self.size is None:
                raise ValueError("@size: required by a box kernel")
        else:
            if self.weights is None:
                raise ValueError("@weights: required by a custom kernel")
            w = as_array(self.weights)
            if w.ndim != 2 or w.shape[0] % 2 == 0 or w.shape[1] % 2 == 0:
                raise ValueError(f"@weights: must be a 2-D kernel with odd sides, got shape {w.shape}")
            if abs(w.sum()) < 1e-12:
                raise ValueError("@weights: sum to 0 (cannot be normalized)")
        return self


class Envelope(BaseModel):
    """Per-pixel bounds (the veriFIRE sensor-model form): every pixel in ``[lower, upper]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lower: InputRef = Field(description="per-pixel minimum (image-shaped)")
    upper: InputRef = Field(description="per-pixel maximum (image-shaped)")

    _check = field_validator("lower", "upper", mode="before")(classmethod(lambda cls, v: check_input_ref(v)))


class BlurTolerance(PropertyBase):
    """The decision survives blurring ``input``.

    With ``kernel``: for each kernel ``K`` of the family and every strength ``t`` in
    ``strength``, the image ``(1 - t) * input + t * (K * input)`` keeps the class ``label``.
    A sigma range is checked exactly at ``steps`` evenly spaced sigmas (endpoints included)
    and, for every sigma in between, through a sound per-pixel envelope box that can prove but
    never refute.  With ``envelope``: every image whose pixels lie within
    ``[envelope.lower, envelope.upper]`` keeps the class.
    """

    kind: Literal["blur_tolerance"] = "blur_tolerance"
    input: InputRef = Field(description="the sharp image")
    kernel: Union[Kernel, None] = Field(default=None, description="the blur family")
    strength: Range = Field(default=(0.0, 1.0), description="t: 0 = sharp, 1 = fully blurred")
    envelope: Union[Envelope, None] = Field(default=None, description="per-pixel [min, max] instead of a kernel")
    image_shape: Union[list[Annotated[int, Field(ge=1)]], None] = Field(
        default=None, min_length=2, max_length=3,
        description="[H, W] or [C, H, W] when the model's input is flat; default: the model's input shape")
    border: Literal["edge", "zero"] = Field(default="edge", description="how the blur pads the border")
    label: Label = Field(default="predicted", description=_LABEL_DOC)
    targets: Targets = Field(default=None, min_length=1, description=_TARGETS_DOC)

    _check_input = field_validator("input", mode="before")(classmethod(lambda cls, v: check_input_ref(v)))

    @model_validator(mode="after")
    def _one_form(self) -> BlurTolerance:
        if (self.kernel is None) == (self.envelope is None):
            raise ValueError("@kernel: give exactly one of 'kernel' or 'envelope'")
        _label_not_target(self.label, self.targets)
        return self


# ---------------------------------------------------------------------------------------
# kind: brightness_contrast
# ---------------------------------------------------------------------------------------

class BrightnessContrast(PropertyBase):
    """The class stays ``label`` on every ``c * input + b`` (clamped to ``clip``) with c, b in ranges."""

    kind: Literal["brightness_contrast"] = "brightness_contrast"
    input: InputRef = Field(description="the image")
    contrast: Range = Field(default=(1.0, 1.0), description="range of the factor c")
    brightness: Range = Field(default=(0.0, 0.0), description="range of the offset b")
    clip: Union[Range, None] = Field(default=None, description="clamp the changed image to [lo, hi]")
    label: Label = Field(default="predicted", description=_LABEL_DOC)
    targets: Targets = Field(default=None, min_length=1, description=_TARGETS_DOC)

    _check_input = field_validator("input", mode="before")(classmethod(lambda cls, v: check_input_ref(v)))

    @model_validator(mode="after")
    def _check(self) -> BrightnessContrast:
        _label_not_target(self.label, self.targets)
        return self


# ---------------------------------------------------------------------------------------
# kind: vnnlib
# ---------------------------------------------------------------------------------------

class VnnLib(PropertyBase):
    """A VNN-LIB file, so one YAML can bundle many."""

    kind: Literal["vnnlib"] = "vnnlib"
    path: str = Field(description="a .vnnlib (or .vnnlib.gz) file, relative to the spec file")

    @field_validator("path")
    @classmethod
    def _suffix(cls, value: str) -> str:
        if not value.lower().endswith((".vnnlib", ".vnnlib.gz")):
            raise ValueError(f"must name a .vnnlib or .vnnlib.gz file, got {value!r}")
        return value


#: Every property kind, in the order the schema lists them.  Add new kinds here.
PROPERTY_TYPES: tuple[type[PropertyBase], ...] = (
    LocalRobustness, OutputRange, Monotonicity, BlurTolerance, BrightnessContrast, VnnLib,
)

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
