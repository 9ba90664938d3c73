"""IBP-friendly initialisation (Shi et al. 2021, "Fast certified robust training").

Plain Kaiming/Xavier initialisation makes interval bounds grow by about ``sqrt(fan_in)`` per
layer; drawing weights from ``N(0, 2*pi / fan_in**2)`` keeps the expected bound width stable
at initialisation.  The last layer keeps its default initialisation; a layer feeding a
residual sum is halved.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from certify.train.models import Residual


def ibp_init(model: nn.Module) -> None:
    """Re-initialise, in place, every Linear/Conv2d weight but the last; zero their biases."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        for m in layers[:-1]:
            fan_in = m.weight[0].numel()
            m.weight.normal_(0.0, math.sqrt(2 * math.pi) / fan_in)
            if m.bias is not None:
                m.bias.zero_()
        for block in (m for m in model.modules() if isinstance(m, Residual)):
            last = [m for m in block.body.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
            if last and last[-1] is not layers[-1]:
                last[-1].weight.div_(2)
