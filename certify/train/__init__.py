"""Certified training: IBP / CROWN-IBP losses on live torch modules, schedules, the loop.

Drop the loss into any loop::

    from certify.train import certified_loss
    loss = certified_loss(model, x, y, eps=0.1, method="ibp")
"""

from __future__ import annotations

from certify.train.init import ibp_init
from certify.train.loss import (
    CROWN_RULES,
    IBP_RULES,
    certified_loss,
    check_supported,
    margin_lower_bounds,
    robust_cross_entropy,
)
from certify.train.regularizers import ibp_regularizer
from certify.train.schedule import Ramp, Schedule

__all__ = [
    "CROWN_RULES",
    "IBP_RULES",
    "Ramp",
    "Schedule",
    "certified_loss",
    "check_supported",
    "ibp_init",
    "ibp_regularizer",
    "margin_lower_bounds",
    "robust_cross_entropy",
]
