"""SGD with Nesterov momentum, weight decay on conv/linear weights only, and the official cosine."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay the weight matrices/kernels (ndim > 1); never BatchNorm parameters or biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(
    model: nn.Module, lr: float, momentum: float, nesterov: bool, weight_decay: float, fused: bool
) -> torch.optim.SGD:
    kind = {"fused": True} if fused else {"foreach": True}
    return torch.optim.SGD(param_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=nesterov, **kind)


def cosine_lr(base_lr: float, step: int, total: int) -> float:
    """Official FixMatch decay: lr * cos(7*pi*min(k/K, 1) / 16) (ends at ~0.2*lr, never at zero). The
    clip matters when K (--lr-schedule-steps) is shorter than the run: past K the rate stays at its end."""
    return base_lr * math.cos(7 * math.pi * min(step / total, 1.0) / 16)
