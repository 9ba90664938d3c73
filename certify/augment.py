"""Building augmented networks for lowerings, and the oracles that replay them on the original model.

A lowering that changes the question's variables (a blur strength, a pair ``x, x'``) builds a
new :class:`~certify.network.Network` by composing nodes: a *front* network that maps the new
variables ``z`` to one or two inputs of the model, followed by one or two copies of the model's
body (sharing its weight tensors).  Counterexamples ``z`` are replayed by a
:class:`MappedOracle`: it maps ``z`` to the model's input(s) in numpy float64 (never through
the IR) and runs the *original* model (an :class:`~certify.replay.OnnxOracle`) on each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from certify.network import Network, Node, Op
from certify.replay import Oracle

__all__ = [
    "BallOracle", "Front", "MappedOracle", "NetworkOracle", "clamp_nodes", "compose", "front_linear",
]


@dataclass(frozen=True, slots=True, eq=False)
class Front:
    """The nodes that map the new variables (input node first) to ``outputs``.

    Each output node holds one model input, flattened (shape ``(model.input_size,)``).
    """

    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]


def _tensor(values: np.ndarray, like: Network) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64)).to(dtype=like.dtype, device=like.device)


def front_linear(n_vars: int, weight: np.ndarray, bias: np.ndarray, like: Network,
                 name: str = "front") -> tuple[Node, Node]:
    """An input of ``n_vars`` variables and one linear node ``z @ weight + bias``.

    ``weight: [n_vars, n]``, ``bias: [n]``; parameters in ``like``'s dtype and device.
    """
    z = Node(f"{name}_z", Op.INPUT, (), (n_vars,))
    lin = Node(f"{name}_lin", Op.LINEAR, (z.name,), (weight.shape[1],),
               params={"weight": _tensor(weight, like), "bias": _tensor(bias, like)})
    return z, lin


def clamp_nodes(source: Node, lo: float, hi: float, like: Network, name: str) -> tuple[Node, ...]:
    """Nodes computing ``clamp(source, lo, hi) = lo + relu(v - lo) - relu(v - hi)`` (last node: result)."""
    shape = source.shape
    ones = np.ones(shape)
    a = Node(f"{name}_a", Op.AFFINE, (source.name,), shape,
             params={"scale": _tensor(ones, like), "shift": _tensor(-lo * ones, like)})
    b = Node(f"{name}_b", Op.AFFINE, (source.name,), shape,
             params={"scale": _tensor(ones, like), "shift": _tensor(-hi * ones, like)})
    ra = Node(f"{name}_ra", Op.RELU, (a.name,), shape)
    rb = Node(f"{name}_rb", Op.RELU, (b.name,), shape)
    d = Node(f"{name}_d", Op.SUB, (ra.name, rb.name), shape)
    out = Node(f"{name}_out", Op.AFFINE, (d.name,), shape,
               params={"scale": _tensor(ones, like), "shift": _tensor(lo * ones, like)})
    return a, b, ra, rb, d, out


def _copy_body(model: Network, source: str, prefix: str) -> tuple[list[Node], str]:
    """The model's nodes after its input, renamed ``prefix + name``, reading ``source`` (flat).

    Returns the nodes and the name of a flat ``(output_size,)`` node holding the output.
    """
    nodes: list[Node] = []
    first = source
    if model.input_shape != (model.input_size,):
        first = f"{prefix}input"
        nodes.append(Node(first, Op.RESHAPE, (source,), model.input_shape,
                          attrs={"shape": tuple(model.input_shape)}))
    rename = {model.input.name: first}
    for node in model.nodes[1:]:
        rename[node.name] = prefix + node.name
        nodes.append(replace(node, name=prefix + node.name, inputs=tuple(rename[i] for i in node.inputs)))
    out = rename[model.output]
    if model.output_shape != (model.output_size,):
        flat = f"{prefix}output_flat"
        nodes.append(Node(flat, Op.RESHAPE, (out,), (model.output_size,), attrs={"shape": (model.output_size,)}))
        out = flat
    return nodes, out


def compose(front: Front, model: Network, name: str) -> Network:
    """``z -> [model(front_1(z)), model(front_2(z)), ...]`` concatenated (flat), weights shared.

    With one front output the result's output is the model's output, flattened.
    """
    nodes = list(front.nodes)
    outs = []
    for k, source in enumerate(front.outputs):
        prefix = f"copy{k}_" if len(front.outputs) > 1 else "body_"
        body, out = _copy_body(model, source, prefix)
        nodes += body
        outs.append(out)
    if len(outs) == 1:
        return Network(tuple(nodes), outs[0], name)
    cat = Node("outputs", Op.CONCAT, tuple(outs), (model.output_size * len(outs),), attrs={"axis": 0})
    return Network((*nodes, cat), cat.name, name)


# ---------------------------------------------------------------------------------------
# Oracles
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, eq=False)
class NetworkOracle:
    """Evaluates certify's IR in float64.  NOT independent: only for callers with no model file."""

    network: Network

    def run(self, x: np.ndarray) -> np.ndarray:
        net = self.network.to(dtype=torch.float64, device="cpu")
        xt = torch.as_tensor(np.asarray(x, dtype=np.float64)).reshape(1, *net.input_shape)
        with torch.no_grad():
            return net(xt).reshape(-1).numpy()


@dataclass(frozen=True, slots=True, eq=False)
class MappedOracle:
    """Replays a lowered problem on the original model.

    ``inputs(z)`` maps one problem input (float64, numpy) to the list of original model
    inputs; :meth:`run` returns the original model's outputs on them, concatenated.
    """

    base: Oracle
    inputs: Callable[[np.ndarray], Sequence[np.ndarray]]

    def run(self, x: np.ndarray) -> np.ndarray:
        xs = self.inputs(np.asarray(x, dtype=np.float64))
        return np.concatenate([np.asarray(self.base.run(xi), dtype=np.float64).reshape(-1) for xi in xs])


@dataclass(frozen=True, slots=True, eq=False)
class BallOracle:
    """The original model, but only inside the L2 ball ``|x - center|_2 <= radius``.

    Outside the ball it returns NaN outputs, which lie in no unsafe set, so a counterexample
    of the enclosing box that is not in the ball never replays (never counts as VIOLATED).
    """

    base: Oracle
    center: np.ndarray
    radius: float

    def run(self, x: np.ndarray) -> np.ndarray:
        y = np.asarray(self.base.run(x), dtype=np.float64)
        dist = float(np.linalg.norm(np.asarray(x, dtype=np.float64).reshape(-1) - self.center.reshape(-1)))
        return y if dist <= self.radius * (1 + 1e-9) else np.full_like(y, np.nan)
