"""Lower, solve, lift: each property kind becomes canonical :class:`certify.problem.Problem` s.

``LOWERINGS[kind](property, context)`` returns a list of :class:`Lowered`; the
property HOLDS when every problem in the list has no solution, and a solution ``x`` of any
of them is mapped back to the user's terms by that problem's ``lift``.

Kinds that change the question's variables build an augmented network (see
:mod:`certify.augment`) and replay counterexamples on the original model through a
:class:`~certify.augment.MappedOracle` (numpy float64 map, then onnxruntime):

* ``robustness``: the (clipped) ball is the box; L2 is checked on its enclosing L-inf box.
* ``output_range``: the box; one unsafe half-space per bound.
* ``monotonicity``: pairwise: variables ``(x, d)``, a two-copy product net over ``[x; x']``;
  path: variable ``a``, a two-copy net over ``[image(a); image(reference)]``.
* ``blur_tolerance``: per kernel, variable ``t`` (strength), one prepended linear layer;
  envelope: the per-pixel box.
* ``brightness_contrast``: variables ``(c, b)``, a prepended linear layer (+ clamp).
* ``vnnlib``: the file's boxes and disjuncts.

Each kind's rule is a module of this package (``robustness``, ``output_range``, ``monotonicity``,
``blur``, ``brightness``, ``vnnlib``); what they share is :mod:`certify.lower.common`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certify.errors import SpecError
from certify.lower.blur import SIGMA_PIECES, blur, gaussian_kernel, gaussian_weight_boxes, lower_blur, shifted_windows
from certify.lower.brightness import lower_brightness
from certify.lower.common import LowerContext, Lowered, margin_halfspaces, predict, robustness_box
from certify.lower.monotonicity import lower_monotonicity
from certify.lower.output_range import lower_output_range
from certify.lower.robustness import lower_robustness
from certify.lower.vnnlib import lower_vnnlib
from certify.network import Network
from certify.spec import Property, SpecDocument

if TYPE_CHECKING:
    from certify.replay import Oracle

__all__ = [
    "LOWERINGS",
    "SIGMA_PIECES",
    "LowerContext",
    "Lowered",
    "blur",
    "gaussian_kernel",
    "gaussian_weight_boxes",
    "lower",
    "lower_document",
    "make_context",
    "margin_halfspaces",
    "predict",
    "robustness_box",
    "shifted_windows",
]


def make_context(network: Network, base_dir: Path = Path("."), model_path: str | Path | None = None) -> LowerContext:
    """The context for lowering properties on ``network`` (loaded from ``model_path`` if given)."""
    from certify.augment import NetworkOracle
    from certify.replay import OnnxOracle

    path = None if model_path is None else Path(model_path)
    oracle: Oracle = OnnxOracle(path) if path is not None else NetworkOracle(network)
    return LowerContext(network, Path(base_dir), oracle, path)


def lower(prop: Property, network: Network, base_dir: Path = Path("."),
          model_path: str | Path | None = None, *, context: LowerContext | None = None) -> list[Lowered]:
    """The problems whose joint infeasibility proves ``prop`` on ``network``.

    ``base_dir`` resolves relative file paths in ``prop`` (the spec file's folder);
    ``model_path`` is the ONNX file ``network`` was loaded from: lowerings that augment the
    network replay their counterexamples on it in onnxruntime.
    """
    try:
        rule = LOWERINGS[prop.kind]
    except KeyError:
        raise SpecError(f"kind: no lowering for {prop.kind!r}; known: {', '.join(LOWERINGS)}") from None
    return rule(prop, context or make_context(network, base_dir, model_path))


def lower_document(doc: SpecDocument, network: Network, base_dir: Path | None = None,
                   model_path: str | Path | None = None) -> list[Lowered]:
    """Every property of ``doc`` lowered, in order; errors name the file and the property.

    Unnamed problems of a several-property document are named ``kind[i]`` (with the
    lowering's own suffix, e.g. ``robustness[0]#1`` for a sample).
    """
    base = doc.base_dir if base_dir is None else base_dir
    ctx = make_context(network, base, model_path)
    several = len(doc.properties) > 1
    out: list[Lowered] = []
    for i, prop in enumerate(doc.properties):
        where = f"properties[{i}]." if several else ""
        try:
            lowered = lower(prop, network, context=ctx)
        except SpecError as exc:
            raise type(exc)(f"{doc.source}: {where}{exc}") from None
        if several and not prop.name:
            default = prop.kind
            lowered = [replace(lw, problem=replace(
                lw.problem, name=f"{prop.kind}[{i}]" + lw.problem.name.removeprefix(default)))
                for lw in lowered]
        out.extend(lowered)
    return out


#: How each property kind becomes canonical problems.  Add new kinds here.
# (typed with Any: each rule takes its own kind of Property)
LOWERINGS: dict[str, Callable[[Any, LowerContext], list[Lowered]]] = {
    "robustness": lower_robustness,
    "output_range": lower_output_range,
    "monotonicity": lower_monotonicity,
    "blur_tolerance": lower_blur,
    "brightness_contrast": lower_brightness,
    "vnnlib": lower_vnnlib,
}
