"""Regularisers that stabilise early IBP training (after Shi et al. 2021).

Both read the pre-activation boxes of the ReLUs, recorded in an IBP ``trace``:

* *tightness*: penalises layers whose mean bound radius has grown past ``1/tol`` times the
  input's mean radius (bounds exploding with depth);
* *relu balance*: penalises layers whose active and inactive neurons are unbalanced in mean
  and variance, which makes many neurons unstable or dead.

Each term is ``relu(tol - ratio) / tol`` averaged over ReLU layers; :func:`ibp_regularizer`
returns their sum.  Shi et al. weigh it by ``lambda * (1 - eps / eps_max)`` during the ramp.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from certify.train.loss import Trace


def _balance(center: Tensor, lo: Tensor, hi: Tensor, tol: float) -> Tensor:
    active, inactive = (lo > 0).to(center.dtype), (hi < 0).to(center.dtype)
    delta = (center - center.mean()) ** 2
    mean_ratio = (center * active).mean() / -(center * inactive).mean()
    var_ratio = (delta * active).sum() / (delta * inactive).sum()
    terms = []
    for r in (mean_ratio, var_ratio):
        r = torch.minimum(r, 1 / r.clamp(min=1e-12))
        terms.append(F.relu(tol - r))
    loss = (terms[0] + terms[1]) / tol
    return torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss))


def ibp_regularizer(trace: Trace, input_rad: Tensor, tol: float = 0.5) -> Tensor:
    """Tightness + ReLU-balance penalty over the ReLU layers of an IBP ``trace``."""
    r0 = input_rad.mean()
    relus = [(mid, rad) for m, mid, rad in trace if isinstance(m, nn.ReLU)]
    if not relus or r0 <= 0:
        return input_rad.new_zeros(())
    total = input_rad.new_zeros(())
    for mid, rad in relus:
        total = total + F.relu(tol - r0 / rad.mean().clamp(min=1e-12)) / tol
        total = total + _balance(mid, mid - rad, mid + rad, tol)
    return total / len(relus)
