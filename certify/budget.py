"""The shared time budget: one wall-clock deadline, and the device to compute on.

Every long loop (bound passes, optimiser iterations, branch-and-bound batches, solver calls)
reads :attr:`Budget.expired` (or :attr:`~Budget.remaining`) and stops with the sound result it
has, so that ``certify check --timeout T`` answers by ``T``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class Budget:
    """A wall-clock deadline (``time.monotonic`` seconds) and the device to compute on."""

    deadline: float
    device: str = "cpu"

    @staticmethod
    def seconds(seconds: float, device: str = "cpu") -> Budget:
        return Budget(time.monotonic() + seconds, device)

    @staticmethod
    def unlimited(device: str = "cpu") -> Budget:
        return Budget(float("inf"), device)

    @property
    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def share(self, fraction: float) -> Budget:
        """A budget ending after ``fraction`` of the remaining time."""
        return Budget(time.monotonic() + max(0.0, self.remaining) * fraction, self.device)

    def at_most(self, seconds: float) -> Budget:
        """A budget ending after ``seconds`` or at this one's deadline, whichever is first."""
        return Budget(min(self.deadline, time.monotonic() + seconds), self.device)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)
