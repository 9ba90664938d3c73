"""The shared time budget: one wall-clock deadline, the device to compute on, and whether a
proof is wanted with each HOLDS.

Every long loop (bound passes, optimiser iterations, branch-and-bound batches, solver calls)
reads :attr:`Budget.expired` (or :attr:`~Budget.remaining`) and stops with the sound result it
has, so that ``certify check --timeout T`` answers by ``T``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True, slots=True)
class Budget:
    """A wall-clock deadline (``time.monotonic`` seconds), the device to compute on, whether
    engines that can should attach a proof certificate to a HOLDS (``proofs``), and whether the
    proof checker re-checks each HOLDS before it is reported (``checked``: then a search may
    round in float32, see :func:`certify.bab.record.search_dtype`)."""

    deadline: float
    device: str = "cpu"
    proofs: bool = False
    checked: bool = False

    @staticmethod
    def seconds(seconds: float, device: str = "cpu", proofs: bool = False, checked: bool = False) -> Budget:
        return Budget(time.monotonic() + seconds, device, proofs, checked)

    @staticmethod
    def unlimited(device: str = "cpu", proofs: bool = False) -> Budget:
        return Budget(float("inf"), device, proofs)

    @property
    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def share(self, fraction: float) -> Budget:
        """A budget ending after ``fraction`` of the remaining time."""
        return replace(self, deadline=time.monotonic() + max(0.0, self.remaining) * fraction)

    def at_most(self, seconds: float) -> Budget:
        """A budget ending after ``seconds`` or at this one's deadline, whichever is first."""
        return replace(self, deadline=min(self.deadline, time.monotonic() + seconds))

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)
