"""How uint8 pixels become network inputs: the official [-1, 1] scaling, or per-channel standardisation
(`--input-scaling mean_std`). The Normalizer travels with every model (checkpoint, safetensors, ONNX)."""

from __future__ import annotations

import torch
import torch.nn as nn


class Normalizer(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    """uint8 (N, C, H, W) -> float, scaled to 0..1 and standardised per channel."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std


def normalizer_for(scaling: str, data) -> Normalizer:
    """official: mean 0.5 and std 0.5 in 0..1 units, i.e. x/127.5 - 1 (libml/data.py `record_parse`);
    mean_std: the training images' channel statistics."""
    if scaling == "official":
        channels = data.image_shape[0]
        return Normalizer([0.5] * channels, [0.5] * channels)
    return Normalizer(*data.channel_stats())
