"""Model registry: `build_model(name, num_classes, in_channels)`."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from fixmatch.errors import UserError

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def wrap(fn):
        MODELS[name] = fn
        return fn

    return wrap


def build_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels)


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


from fixmatch.models import small, wideresnet  # noqa: E402,F401  (registers the models)
