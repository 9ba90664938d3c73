"""Ramps for eps, kappa and beta, counted in optimiser steps.

A :class:`Ramp` holds ``start`` until step ``begin``, moves to ``end`` over ``length`` steps
(linearly, or "smooth": polynomial growth then linear, C1 at the join, as auto_LiRPA's
smoothed eps scheduler), then holds ``end``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Shape = Literal["linear", "smooth"]


def smooth_fraction(t: float, power: float = 4.0, knee: float = 0.25) -> float:
    """``t`` in ``[0, 1]`` -> ``[0, 1]``: ``a t^p`` below ``knee``, then the tangent line."""
    a = 1.0 / (knee**power + power * knee ** (power - 1) * (1 - knee))
    if t < knee:
        return a * t**power
    return a * knee**power + a * power * knee ** (power - 1) * (t - knee)


@dataclass(frozen=True, slots=True)
class Ramp:
    start: float
    end: float
    begin: int = 0
    length: int = 0
    shape: Shape = "linear"

    def __call__(self, step: int) -> float:
        if step < self.begin:
            return self.start
        if self.length <= 0 or step >= self.begin + self.length:
            return self.end
        t = (step - self.begin) / self.length
        f = smooth_fraction(t) if self.shape == "smooth" else t
        return self.start + (self.end - self.start) * f


@dataclass(frozen=True, slots=True)
class Schedule:
    """eps, kappa and beta at every step: warm-up (eps = 0), ramp, then constant."""

    eps: Ramp
    kappa: Ramp
    beta: Ramp

    @staticmethod
    def standard(
        eps: float,
        steps_per_epoch: int,
        warmup_epochs: float,
        ramp_epochs: float,
        shape: Shape = "smooth",
        kappa: tuple[float, float] = (1.0, 0.0),
        beta: tuple[float, float] = (1.0, 0.0),
    ) -> Schedule:
        begin = round(warmup_epochs * steps_per_epoch)
        length = round(ramp_epochs * steps_per_epoch)
        return Schedule(
            eps=Ramp(0.0, eps, begin, length, shape),
            kappa=Ramp(kappa[0], kappa[1], begin, length, "linear"),
            beta=Ramp(beta[0], beta[1], begin, length, "linear"),
        )

    def at(self, step: int) -> tuple[float, float, float]:
        """``(eps, kappa, beta)`` at ``step``."""
        return self.eps(step), self.kappa(step), self.beta(step)
