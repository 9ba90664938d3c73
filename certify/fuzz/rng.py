"""Random numbers for the fuzzer's lanes, seeded, on the lanes' device.

On CPU, uniform floats and coin flips come from numpy's PCG64 (torch's CPU generator is
several times slower, and fuzzing draws millions of numbers per second); on CUDA they come
from a torch generator on the device.  Categorical draws always use the torch generator.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class Rng:
    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.torch = torch.Generator(device=self.device)
        self.torch.manual_seed(seed)
        self._np = np.random.default_rng(seed) if self.device.type == "cpu" else None

    def uniform(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Uniform float32 samples in ``[0, 1)`` of ``shape``."""
        if self._np is not None:
            return torch.from_numpy(self._np.random(shape, dtype=np.float32))
        return torch.rand(shape, generator=self.torch, device=self.device)

    def coins(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Fair coin flips (bool) of ``shape``."""
        if self._np is not None:
            n = math.prod(shape)
            bits = np.unpackbits(np.frombuffer(self._np.bytes((n + 7) // 8), dtype=np.uint8))[:n]
            return torch.from_numpy(bits.view(np.bool_).reshape(shape))
        return torch.rand(shape, generator=self.torch, device=self.device) < 0.5

    def grouped(self, weights: torch.Tensor, n: int) -> tuple[torch.Tensor, list[int]]:
        """``n`` independent draws from the categorical ``weights: [K]``, returned grouped: a
        permutation ``order: [n]`` of ``range(n)`` and ``counts`` (``K`` ints) such that items
        ``order[:counts[0]]`` drew category 0, the next ``counts[1]`` category 1, and so on.
        Zero weights are never drawn.

        On CPU the counts are one multinomial draw and the items a random permutation (the same
        distribution as ``n`` draws, and several times cheaper than drawing and then sorting);
        on CUDA the draws are inverted from the CDF and sorted."""
        k = weights.shape[0]
        if self._np is not None:
            p = weights.to(torch.float64).cpu().numpy()
            counts = self._np.multinomial(n, p / p.sum()).tolist()
            return torch.randperm(n, generator=self.torch), counts
        cdf = weights.to(torch.float64).cumsum(dim=0)
        u = self.uniform((n,)).to(dtype=cdf.dtype) * cdf[-1]
        return grouping((u.unsqueeze(-1) >= cdf[:-1]).sum(dim=-1), k)


def grouping(draws: torch.Tensor, k: int) -> tuple[torch.Tensor, list[int]]:
    """Categorical ``draws: [n]`` (values in ``range(k)``) as :meth:`Rng.grouped` returns them:
    the items sorted by category (stable) and each category's count."""
    return torch.argsort(draws, stable=True), torch.bincount(draws, minlength=k).tolist()
