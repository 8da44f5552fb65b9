"""Exponential moving average of the parameters; BatchNorm buffers are copied live (official)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class EMA:
    def __init__(self, model: nn.Module, decay: float, warmup: bool = False):
        self.decay, self.warmup = decay, warmup
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._src_params: list[torch.Tensor] = list(model.parameters())
        self._src_buffers: list[torch.Tensor] = list(model.buffers())
        self._params: list[torch.Tensor] = list(self.model.parameters())
        self._buffers: list[torch.Tensor] = list(self.model.buffers())

    def decay_at(self, step: int) -> float:
        """With warm-up, early steps average over fewer updates: min(decay, (1+k)/(10+k)).
        Without it, 1000 steps at 0.999 still hold a third of the random initial weights."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        torch._foreach_lerp_(self._params, self._src_params, 1.0 - self.decay_at(step))
        for dst, src in zip(self._buffers, self._src_buffers):
            dst.copy_(src)
