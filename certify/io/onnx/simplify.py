"""Graph simplification after conversion: one topological sweep fuses each node into its
single-user producer (an ``affine`` into a preceding ``linear`` or ``conv``, consecutive affines
and reshapes) and drops no-ops; unreachable nodes are pruned before."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from certify.network import Node, Op

__all__ = ["reachable", "rename", "simplify"]


def _channel_vector(t: torch.Tensor, shape: tuple[int, ...], axis: int) -> torch.Tensor | None:
    """``t`` (broadcast to ``shape``) as a vector along ``axis``, if it is constant elsewhere."""
    full = torch.broadcast_to(t, shape).movedim(axis, -1).reshape(-1, shape[axis])
    return full[0] if torch.equal(full, full[:1].expand_as(full)) else None


def _fuse_into_weighted(axis: int) -> Callable[[Node, Node], Node | None]:
    """Fold an affine into the preceding linear (channel axis -1) or conv (channel axis 0)."""

    def fuse(producer: Node, affine: Node) -> Node | None:
        if not affine.shape:
            return None
        s = _channel_vector(affine.params["scale"], affine.shape, axis)
        t = _channel_vector(affine.params["shift"], affine.shape, axis)
        if s is None or t is None:
            return None
        w = producer.params["weight"]
        w = w * s if producer.op is Op.LINEAR else w * s[:, None, None, None]
        bias = producer.params.get("bias")
        return replace(producer, name=affine.name, params={"weight": w, "bias": t if bias is None else bias * s + t})

    return fuse


def _fuse_affines(first: Node, second: Node) -> Node:
    s1, t1 = first.params["scale"], first.params["shift"]
    s2, t2 = second.params["scale"], second.params["shift"]
    return replace(second, inputs=first.inputs, params={"scale": s1 * s2, "shift": t1 * s2 + t2})


_FUSIONS: dict[tuple[Op, Op], Callable[[Node, Node], Node | None]] = {
    (Op.LINEAR, Op.AFFINE): _fuse_into_weighted(-1),
    (Op.CONV, Op.AFFINE): _fuse_into_weighted(0),
    (Op.AFFINE, Op.AFFINE): _fuse_affines,
    (Op.RESHAPE, Op.RESHAPE): lambda first, second: replace(second, inputs=first.inputs),
}


def _is_noop(node: Node, source: Node) -> bool:
    if node.op is Op.AFFINE:
        return bool(torch.all(node.params["scale"] == 1) and torch.all(node.params["shift"] == 0))
    if node.op is Op.RESHAPE:
        return node.shape == source.shape
    if node.op is Op.TRANSPOSE:
        return list(node.attrs["perm"]) == sorted(node.attrs["perm"])
    if node.op in (Op.SLICE, Op.EXPAND):
        return node.shape == source.shape
    return False


def simplify(nodes: Sequence[Node], output: str) -> list[Node]:
    """One topological sweep: fuse each node into its single-user producer, drop no-ops."""
    users: dict[str, list[str]] = {n.name: [] for n in nodes}
    for n in nodes:
        for i in n.inputs:
            users[i].append(n.name)
    users[output].append("")  # the network output is a user too
    done: dict[str, Node] = {}
    rename: dict[str, str] = {}

    def absorb(producer: Node, node: Node) -> None:
        """``node`` (same name as before) now replaces ``producer``, which is gone."""
        del done[producer.name]
        for i in producer.inputs:
            users[i] = [node.name if u == producer.name else u for u in users[i]]

    for node in nodes:
        if any(i in rename for i in node.inputs):
            node = replace(node, inputs=tuple(rename.get(i, i) for i in node.inputs))
        while len(node.inputs) == 1:
            producer = done[node.inputs[0]]
            fuse = _FUSIONS.get((producer.op, node.op))
            merged = fuse(producer, node) if fuse and users[producer.name] == [node.name] else None
            if merged is None:
                break
            absorb(producer, merged)
            node = merged
        if len(node.inputs) == 1 and _is_noop(node, source := done[node.inputs[0]]):
            if node.name != output:
                rename[node.name] = source.name
                users[source.name] = [u for u in users[source.name] if u != node.name] + users[node.name]
                continue
            if source.op is not Op.INPUT and users[source.name] == [node.name]:
                node = replace(source, name=node.name)
                absorb(source, node)
        done[node.name] = node
    return list(done.values())


def reachable(nodes: dict[str, Node], output: str) -> list[Node]:
    """The nodes ``output`` depends on (the input node always kept), in order."""
    keep = {output}
    for node in reversed(list(nodes.values())):
        if node.name in keep:
            keep.update(node.inputs)
    first = next(iter(nodes))
    return [n for n in nodes.values() if n.name in keep or n.name == first]


def rename(nodes: Sequence[Node], old: str, new: str) -> list[Node]:
    return [replace(n, name=new if n.name == old else n.name,
                    inputs=tuple(new if i == old else i for i in n.inputs)) for n in nodes]
