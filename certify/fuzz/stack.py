"""Several networks of identical structure evaluated as one: lanes ``[G * L, ...]`` in ``G``
contiguous blocks of ``L``, block ``g`` running network ``g``.

Parameter-free ops run on the whole batch at once; ``linear`` and ``affine`` use batched
matrix products / broadcasting over stacked parameters; any other op with parameters
(``conv``) runs block by block.  With ``G = 1`` this is the plain forward pass.  Sign and
floor pass gradients straight through (:data:`certify.network.GRADIENT_SURROGATES`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from certify.network import FORWARD, GRADIENT_SURROGATES, Network, Node, Op


def structure_key(network: Network) -> Hashable:
    """Networks with equal keys can be stacked: same ops, wiring, shapes, attrs, param shapes."""
    index = {n.name: i for i, n in enumerate(network.nodes)}
    return (
        index[network.output],
        tuple(
            (n.op, tuple(index[i] for i in n.inputs), n.shape, repr(sorted(n.attrs.items())),
             tuple(sorted((k, tuple(v.shape), v.dtype) for k, v in n.params.items())))
            for n in network.nodes
        ),
    )


class StackedNetwork:
    """``networks`` (equal :func:`structure_key`) as one function of ``[G * L, *input_shape]``."""

    def __init__(self, networks: Sequence[Network], dtype: torch.dtype, device: torch.device | str) -> None:
        if not networks:
            raise ValueError("StackedNetwork needs at least one network")
        key = structure_key(networks[0])
        if any(structure_key(n) != key for n in networks[1:]):
            raise ValueError("networks of different structure cannot be stacked")
        self.device = torch.device(device)
        self.networks = tuple(n.to(dtype=dtype, device=device) for n in networks)
        self.template = self.networks[0]
        self.G = len(networks)
        self.params = [
            {k: torch.stack([net.nodes[i].params[k] for net in self.networks]) for k in node.params}
            for i, node in enumerate(self.template.nodes)
        ]

    def subset(self, indices: Sequence[int]) -> StackedNetwork:
        """The stack of networks ``indices`` (repeats allowed) from this one's parameters,
        without converting or comparing the networks again."""
        out = object.__new__(StackedNetwork)
        out.networks = tuple(self.networks[i] for i in indices)
        out.template = self.template
        out.G = len(out.networks)
        if out.G == 0:
            raise ValueError("StackedNetwork needs at least one network")
        out.device = self.device
        idx = torch.as_tensor(list(indices), dtype=torch.long, device=self.device)
        out.params = [{k: v.index_select(0, idx) for k, v in p.items()} for p in self.params]
        return out

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.template.input_shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [G * L, *input_shape]`` -> ``[G * L, *output_shape]``."""
        names = [n.name for n in self.template.nodes]
        index = {n: i for i, n in enumerate(names)}
        values: list[torch.Tensor | None] = [x] + [None] * (len(names) - 1)
        for i, node in enumerate(self.template.nodes[1:], start=1):
            args = [values[index[a]] for a in node.inputs]
            values[i] = self._apply(i, node, args)  # type: ignore[arg-type]
        return values[index[self.template.output]]  # type: ignore[return-value]

    def _apply(self, i: int, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        if not node.params or self.G == 1:
            rule = GRADIENT_SURROGATES.get(node.op, FORWARD[node.op])  # same values, useful gradients
            return rule(self.networks[0].nodes[i] if node.params else node, args)
        G, x = self.G, args[0]
        p = self.params[i]
        if node.op is Op.LINEAR:
            w = p["weight"]  # [G, n_in, n_out]
            xs = x.reshape(G, -1, w.shape[1])
            y = torch.baddbmm(p["bias"].unsqueeze(1), xs, w) if "bias" in p else torch.bmm(xs, w)
            return y.reshape(*x.shape[:-1], w.shape[2])
        if node.op is Op.AFFINE:
            xs = x.reshape(G, -1, *x.shape[1:])
            return (xs * p["scale"].unsqueeze(1) + p["shift"].unsqueeze(1)).reshape(x.shape)
        chunks = [a.chunk(G) for a in args]
        return torch.cat([FORWARD[node.op](net.nodes[i], [c[g] for c in chunks])
                          for g, net in enumerate(self.networks)])
