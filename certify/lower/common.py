"""What every lowering shares: the :class:`Lowered` result, the :class:`LowerContext` a rule gets,
and the helpers that read a spec's arrays, check its classes and outputs, and build the boxes and
unsafe sets that several kinds have in common."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from certify.errors import ShapeMismatch, SpecError
from certify.network import Network
from certify.problem import Box, HalfSpaces, Problem
from certify.spec import Monotonicity, OutputRange, OutputSelector, Property, as_array

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
    #: False when the problem over-approximates the property (a proof covers the property, but
    #: a counterexample of the problem may lie outside it and then only replays if it is a member).
    exact: bool = True


@dataclass(frozen=True, slots=True, eq=False)
class LowerContext:
    """What every lowering rule gets besides its property.

    ``oracle`` runs the *original* model on one model input: onnxruntime on the model file
    when its path is known, else certify's own IR (not independent; for library callers
    that have no file).
    """

    network: Network
    base_dir: Path
    oracle: Oracle
    model_path: Path | None = None


# ---------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------

def load_array(value: str | list[Any], base_dir: Path, field: str = "input") -> np.ndarray:
    """A spec's array (inline numbers or a file path) as float64, in the shape it was given."""
    if isinstance(value, str):
        from certify.io.arrays import read_array

        return read_array(value, base_dir, field)
    try:
        return as_array(value)
    except ValueError as exc:
        raise SpecError(f"{field}: {exc}") from None


def load_input(value: str | list[Any], network: Network, base_dir: Path, field: str = "input") -> np.ndarray:
    """A spec's ``input`` (inline numbers or a file) as float64 of ``network.input_shape``."""
    x0 = load_array(value, base_dir, field)
    return fit_input(x0, network, field, "values")


def fit_input(x: np.ndarray, network: Network, field: str, what: str = "values") -> np.ndarray:
    """``x`` reshaped to the model's input shape; :class:`ShapeMismatch` naming ``field`` if sizes differ."""
    if x.size != network.input_size:
        raise ShapeMismatch(
            f"{field}: spec gives {x.size} input {what} (shape {x.shape}), "
            f"model expects {network.input_size} (shape {network.input_shape})"
        )
    return x.reshape(network.input_shape)


def load_bound(value: float | list[Any], network: Network, field: str) -> np.ndarray:
    """A number (broadcast) or an array with the model's input size, as the input shape."""
    if isinstance(value, (int, float)):
        return np.full(network.input_shape, float(value))
    return fit_input(as_array(value), network, field)


def predict(network: Network, x: np.ndarray) -> np.ndarray:
    """``net(x)`` flattened to float64, for one input ``x`` of the network's input shape.

    The input is rounded to float32 first (what onnxruntime would see).
    """
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32)).to(device=network.device, dtype=network.dtype)
    with torch.no_grad():
        y = network.forward(xt.reshape(1, *network.input_shape))
    return y.reshape(-1).double().cpu().numpy()


def classes(label: int | str, targets: list[int] | None, y0: np.ndarray, where: str = "input") -> tuple[int, list[int]]:
    """The label (``predicted``: the argmax of ``y0``) and the target classes, checked against ``y0``'s size."""
    n_out = y0.size
    lab = int(np.argmax(y0)) if label == "predicted" else int(label)
    if not 0 <= lab < n_out:
        raise SpecError(f"label: {lab} is not a class of a model with {n_out} outputs")
    targ = list(targets) if targets is not None else [j for j in range(n_out) if j != lab]
    bad = [j for j in targ if not 0 <= j < n_out]
    if bad:
        raise SpecError(f"targets: {bad} are not classes of a model with {n_out} outputs")
    if lab in targ:
        raise SpecError(f"targets: contains the label {lab} (the model's prediction at {where})")
    return lab, targ


def check_selector(sel: OutputSelector, n_out: int, field: str) -> None:
    """Output indices of ``sel`` must exist in a model with ``n_out`` outputs."""
    bad = [j for j in sel.indices() if j >= n_out]
    if bad:
        key = "output" if sel.output is not None else "margin"
        raise SpecError(f"{field}{key}: {bad} not an output of a model with {n_out} outputs")


def _name(prop: Property, suffix: str = "") -> str:
    return (prop.name or prop.kind) + suffix


# ---------------------------------------------------------------------------------------
# Boxes, unsafe sets and lifts used by several kinds
# ---------------------------------------------------------------------------------------

def robustness_box(x0: np.ndarray, eps: float | np.ndarray, clip: tuple[float, float] | None) -> Box:
    """``[x0 - eps, x0 + eps]`` intersected with ``[lo, hi]``; SpecError if that is empty."""
    lower_, upper = x0 - eps, x0 + eps
    if clip is not None:
        lo, hi = clip
        lower_, upper = np.maximum(lower_, lo), np.minimum(upper, hi)
        if np.any(lower_ > upper):
            shown = eps if np.ndim(eps) == 0 else "per feature"
            raise SpecError(
                f"clip: the eps-ball around input lies outside [{lo}, {hi}] "
                f"(input ranges over [{x0.min()}, {x0.max()}], eps = {shown})"
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


def _robustness_lift(network: Network, x0: np.ndarray, label: int) -> Callable[[np.ndarray], dict[str, Any]]:
    def lift(x: np.ndarray) -> dict[str, Any]:
        x = np.asarray(x, dtype=np.float64).reshape(network.input_shape)
        delta = x - x0
        return {
            "input": x,
            "perturbation": delta,
            "linf": float(np.max(np.abs(delta))),
            "l2": float(np.linalg.norm(delta.reshape(-1))),
            "label": label,
            "predicted": int(np.argmax(predict(network, x))),
        }
    return lift


def region_box(prop: OutputRange | Monotonicity, ctx: LowerContext) -> Box:
    """The input box of a property given as ``lower``/``upper`` or ``input``/``eps``/``clip``."""
    net = ctx.network
    if prop.lower is not None and prop.upper is not None:
        lo, hi = load_bound(prop.lower, net, "lower"), load_bound(prop.upper, net, "upper")
        if np.any(lo > hi):
            raise SpecError(f"lower: exceeds upper at {int(np.sum(lo > hi))} of {lo.size} inputs")
        return Box(lo, hi)
    x0 = load_input(prop.input, net, ctx.base_dir)  # type: ignore[arg-type]
    return robustness_box(x0, float(prop.eps), prop.clip)  # type: ignore[arg-type]
