"""A small model zoo for certified training, plus loading a model from a Python path.

Every zoo model takes images of shape ``(C, H, W)`` with pixels in ``[0, 1]`` and returns
``num_classes`` logits.  Models are plain ``nn.Sequential`` stacks so that the bound rules of
:mod:`certify.train.loss` apply; :class:`Residual` is the one container they add.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from certify.errors import SpecError


class Residual(nn.Module):
    """``body(x) + shortcut(x)``; the shortcut is the identity when ``None``."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


def _flat_size(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *input_shape)).numel())


def mlp(input_shape: tuple[int, ...], num_classes: int, width: int = 512, depth: int = 2) -> nn.Sequential:
    """``depth`` hidden ReLU layers of ``width`` units."""
    layers: list[nn.Module] = [nn.Flatten()]
    n_in = 1
    for d in input_shape:
        n_in *= d
    for _ in range(depth):
        layers += [nn.Linear(n_in, width), nn.ReLU()]
        n_in = width
    layers.append(nn.Linear(n_in, num_classes))
    return nn.Sequential(*layers)


def cnn_small(input_shape: tuple[int, ...], num_classes: int, width: int = 1) -> nn.Sequential:
    """The "small" CNN of Gowal et al. 2018 (IBP): conv16-4x4/2, conv32-4x4/1, fc100."""
    c = input_shape[0]
    features = nn.Sequential(
        nn.Conv2d(c, 16 * width, 4, stride=2), nn.ReLU(),
        nn.Conv2d(16 * width, 32 * width, 4, stride=1), nn.ReLU(),
        nn.Flatten(),
    )
    n = _flat_size(features, input_shape)
    return nn.Sequential(*features, nn.Linear(n, 100 * width), nn.ReLU(), nn.Linear(100 * width, num_classes))


def cnn_medium(input_shape: tuple[int, ...], num_classes: int, width: int = 1) -> nn.Sequential:
    """A 4-conv, 3-fc CNN (CROWN-IBP's "DM-medium" shape), padded to keep it image-size agnostic."""
    c = input_shape[0]
    w = width
    features = nn.Sequential(
        nn.Conv2d(c, 32 * w, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32 * w, 32 * w, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32 * w, 64 * w, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64 * w, 64 * w, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(),
    )
    n = _flat_size(features, input_shape)
    return nn.Sequential(
        *features, nn.Linear(n, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, num_classes)
    )


ZOO: Mapping[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "cnn-small": cnn_small,
    "cnn-medium": cnn_medium,
}


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, kwargs: Mapping[str, Any] | None = None
) -> nn.Module:
    """A zoo model by name, or ``"package.module:attr"``.

    A Python-path ``attr`` may be an ``nn.Module`` instance, or a callable called with
    ``input_shape=..., num_classes=..., **kwargs`` (or with ``**kwargs`` alone if that fails
    with a ``TypeError`` about those two keywords).
    """
    kwargs = dict(kwargs or {})
    if name in ZOO:
        try:
            return ZOO[name](input_shape, num_classes, **kwargs)
        except TypeError as exc:
            raise SpecError(f"model.kwargs: {exc}") from None
    if ":" not in name:
        raise SpecError(f"model.name: {name!r} is neither a zoo model ({', '.join(ZOO)}) nor 'package.module:attr'")
    module_name, attr = name.split(":", 1)
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"model.name: cannot load {name!r}: {exc}") from None
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise SpecError(f"model.name: {name!r} is neither an nn.Module nor callable")
    try:
        model = obj(input_shape=input_shape, num_classes=num_classes, **kwargs)
    except TypeError:
        model = obj(**kwargs)
    if not isinstance(model, nn.Module):
        raise SpecError(f"model.name: {name!r} returned {type(model).__name__}, not an nn.Module")
    return model
