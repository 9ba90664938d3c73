"""Lower, solve, lift: each property kind becomes canonical :class:`certify.problem.Problem` s.

``LOWERINGS[kind](property, network, base_dir)`` returns a list of :class:`Lowered`; the
property HOLDS when every problem in the list has no solution, and a solution ``x`` of any
of them is mapped back to the user's terms by that problem's ``lift``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from certify.errors import ShapeMismatch, SpecError
from certify.network import Network
from certify.problem import Box, HalfSpaces, Problem
from certify.spec import LocalRobustness, Property, SpecDocument, as_array

if TYPE_CHECKING:
    from certify.replay import Oracle


@dataclass(frozen=True, slots=True)
class Lowered:
    """One canonical problem and the map of its counterexamples back to the property's terms.

    ``oracle`` replays counterexamples when the problem's network is not the model file's
    (a lowering that builds a product or prepends layers); None means "the model file".
    """

    problem: Problem
    lift: Callable[[np.ndarray], dict[str, Any]]
    oracle: Oracle | None = None


def lower(prop: Property, network: Network, base_dir: Path = Path(".")) -> list[Lowered]:
    """The problems whose joint infeasibility proves ``prop`` on ``network``.

    ``base_dir`` resolves relative file paths in ``prop`` (the spec file's folder).
    """
    try:
        rule = LOWERINGS[prop.kind]
    except KeyError:
        raise SpecError(f"kind: no lowering for {prop.kind!r}; known: {', '.join(LOWERINGS)}") from None
    return rule(prop, network, base_dir)


def lower_document(doc: SpecDocument, network: Network, base_dir: Path | None = None) -> list[Lowered]:
    """Every property of ``doc`` lowered, in order; errors name the file and the property.

    Unnamed problems of a several-property document are named ``kind[i]``.
    """
    base = doc.base_dir if base_dir is None else base_dir
    several = len(doc.properties) > 1
    out: list[Lowered] = []
    for i, prop in enumerate(doc.properties):
        where = f"properties[{i}]." if several else ""
        try:
            lowered = lower(prop, network, base)
        except SpecError as exc:
            raise type(exc)(f"{doc.source}: {where}{exc}") from None
        if several and not prop.name:
            lowered = [replace(lw, problem=replace(lw.problem, name=f"{prop.kind}[{i}]")) for lw in lowered]
        out.extend(lowered)
    return out


# ---------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------

def load_input(value: str | list[Any], network: Network, base_dir: Path) -> np.ndarray:
    """A spec's ``input`` (inline numbers or a ``.npy`` path) as float64 of ``network.input_shape``."""
    if isinstance(value, str):
        path = base_dir / value
        try:
            raw = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SpecError(f"input: cannot read {str(path)!r}: {exc}") from None
        try:
            x0 = as_array(raw.tolist())
        except ValueError as exc:
            raise SpecError(f"input: {str(path)!r} {exc}") from None
    else:
        x0 = as_array(value)
    if x0.size != network.input_size:
        raise ShapeMismatch(
            f"input: spec gives {x0.size} input values (shape {x0.shape}), "
            f"model expects {network.input_size} (shape {network.input_shape})"
        )
    return x0.reshape(network.input_shape)


def predict(network: Network, x: np.ndarray) -> np.ndarray:
    """``net(x)`` flattened to float64, for one input ``x`` of the network's input shape.

    The input is rounded to float32 first (what onnxruntime would see).
    """
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32)).to(device=network.device, dtype=network.dtype)
    with torch.no_grad():
        y = network.forward(xt.reshape(1, *network.input_shape))
    return y.reshape(-1).double().cpu().numpy()


# ---------------------------------------------------------------------------------------
# kind: robustness
# ---------------------------------------------------------------------------------------

def robustness_box(x0: np.ndarray, eps: float, clip: tuple[float, float] | None) -> Box:
    """``[x0 - eps, x0 + eps]`` intersected with ``[lo, hi]``; SpecError if that is empty."""
    lower_, upper = x0 - eps, x0 + eps
    if clip is not None:
        lo, hi = clip
        lower_, upper = np.maximum(lower_, lo), np.minimum(upper, hi)
        if np.any(lower_ > upper):
            raise SpecError(
                f"clip: the eps-ball around input lies outside [{lo}, {hi}] "
                f"(input ranges over [{x0.min()}, {x0.max()}], eps = {eps})"
            )
    return Box(lower_, upper)


def margin_halfspaces(label: int, targets: list[int], n_out: int) -> tuple[HalfSpaces, ...]:
    """One disjunct per target ``j``: ``y_label - y_j <= 0`` (``j`` scores at least as high)."""
    out = []
    for j in targets:
        row = np.zeros((1, n_out))
        row[0, label], row[0, j] = 1.0, -1.0
        out.append(HalfSpaces(row, np.zeros(1)))
    return tuple(out)


def lower_robustness(prop: LocalRobustness, network: Network, base_dir: Path) -> list[Lowered]:
    x0 = load_input(prop.input, network, base_dir)
    n_out = network.output_size
    y0 = predict(network, x0)
    label = int(np.argmax(y0)) if prop.label == "predicted" else prop.label
    if not 0 <= label < n_out:
        raise SpecError(f"label: {label} is not a class of a model with {n_out} outputs")
    targets = prop.targets if prop.targets is not None else [j for j in range(n_out) if j != label]
    bad = [j for j in targets if not 0 <= j < n_out]
    if bad:
        raise SpecError(f"targets: {bad} are not classes of a model with {n_out} outputs")
    if label in targets:
        raise SpecError(f"targets: contains the label {label} (the model's prediction at input)")

    def lift(x: np.ndarray) -> dict[str, Any]:
        x = np.asarray(x, dtype=np.float64).reshape(network.input_shape)
        delta = x - x0
        return {
            "input": x,
            "perturbation": delta,
            "linf": float(np.max(np.abs(delta))),
            "label": label,
            "predicted": int(np.argmax(predict(network, x))),
        }

    problem = Problem(
        network=network,
        box=robustness_box(x0, prop.eps, prop.clip),
        unsafe=margin_halfspaces(label, targets, n_out),
        name=prop.name or "robustness",
        meta={"kind": prop.kind, "label": str(label), "eps": repr(prop.eps),
              "targets": ",".join(map(str, targets))},
    )
    return [Lowered(problem, lift)]


#: How each property kind becomes canonical problems.  Add new kinds here.
# (typed with Any: each rule takes its own kind of Property)
LOWERINGS: dict[str, Callable[[Any, Network, Path], list[Lowered]]] = {
    "robustness": lower_robustness,
}
