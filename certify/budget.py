"""The shared time budget: one wall-clock deadline, and the device to compute on.

Every long loop (bound passes, optimiser iterations, branch-and-bound batches, solver calls)
calls :meth:`Budget.check` (or reads :attr:`Budget.expired`) so that ``certify check
--timeout T`` answers by ``T``: :meth:`~Budget.check` raises :class:`OutOfTime`, which the
engine that started the work turns into an UNKNOWN verdict ("timeout").
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


class OutOfTime(Exception):
    """The budget's deadline passed inside a computation (not an error: engines answer UNKNOWN)."""


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

    def check(self) -> None:
        """Raise :class:`OutOfTime` once the deadline has passed."""
        if time.monotonic() >= self.deadline:
            raise OutOfTime

    def share(self, fraction: float) -> Budget:
        """A budget ending after ``fraction`` of the remaining time."""
        return Budget(time.monotonic() + max(0.0, self.remaining) * fraction, self.device)

    def at_most(self, seconds: float) -> Budget:
        """A budget ending after ``seconds`` or at this one's deadline, whichever is first."""
        return Budget(min(self.deadline, time.monotonic() + seconds), self.device)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)
