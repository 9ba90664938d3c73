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

    def choice(self, weights: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` draws (with replacement) from the categorical ``weights: [K]`` -> ``[n]`` (long).
        Inverse-CDF sampling on :meth:`uniform` draws (``torch.multinomial`` cost the fuzzer a
        tenth of its time with one-step episodes); zero weights are never drawn."""
        cdf = weights.to(torch.float64).cumsum(dim=0)
        u = self.uniform((n,)).to(device=cdf.device, dtype=cdf.dtype) * cdf[-1]
        # the number of CDF steps at or below each draw (a compare per category beats a binary
        # search for the few categories drawn here)
        return (u.unsqueeze(-1) >= cdf[:-1]).sum(dim=-1)
