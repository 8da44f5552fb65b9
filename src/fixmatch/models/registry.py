"""The model registry: each network module registers its builder here; `build_model` looks it up."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from fixmatch.errors import UserError
from fixmatch.models.layers import WIRINGS

MODELS: dict[str, Callable[..., nn.Module]] = {}
OFFICIAL_BN_MOMENTUM = 0.001  # TF decay 0.999


def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: add a network builder to the registry under its function's name; a name taken twice
    is a mistake, not a replacement."""
    if fn.__name__ in MODELS:
        raise ValueError(f"two models are named {fn.__name__!r}: {MODELS[fn.__name__].__module__} and {fn.__module__}")
    MODELS[fn.__name__] = fn
    return fn


def build_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    wiring: str = "official",
    bn_momentum: float = OFFICIAL_BN_MOMENTUM,
) -> nn.Module:
    """`wiring` names the layer variant (models.layers.WIRINGS): "official" for everything trained
    now; older model files record theirs in their metadata."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    if wiring not in WIRINGS:
        raise UserError(f"unknown architecture variant {wiring!r}; known: {', '.join(WIRINGS)}")
    model = MODELS[name](num_classes=num_classes, in_channels=in_channels, wiring=wiring)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = bn_momentum
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
