"""Small CNNs for CPU-scale runs (the embedded digits demo, tests, CPU FER stopgaps)."""

from __future__ import annotations

import torch.nn as nn

from fixmatch.models.layers import LEAK, WIRINGS, Wiring, batch_norm, conv, init_official
from fixmatch.models.registry import register


def conv_bn(c_in: int, c_out: int, wiring: Wiring) -> list[nn.Module]:
    return [conv(c_in, c_out, 3, 1, wiring), batch_norm(c_out, wiring), nn.LeakyReLU(LEAK, inplace=True)]


class SmallCNN(nn.Module):
    """conv-conv-pool stages, then global average pooling and a linear classifier."""

    def __init__(self, num_classes: int, in_channels: int, widths: list[int], wiring: Wiring):
        super().__init__()
        layers, c = [], in_channels
        for i, w in enumerate(widths):
            layers += conv_bn(c, w, wiring) + conv_bn(w, w, wiring)
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)
        init_official(self)

    def forward(self, x):
        return self.fc(self.body(x).mean(dim=(2, 3)))


@register
def cnn_small(num_classes: int, in_channels: int = 3, wiring: str = "official") -> SmallCNN:
    """~35k parameters: the digits demo network (works at 8x8)."""
    return SmallCNN(num_classes, in_channels, [16, 32, 32], WIRINGS[wiring])


@register
def cnn_medium(num_classes: int, in_channels: int = 3, wiring: str = "official") -> SmallCNN:
    """A few hundred thousand parameters: CPU-feasible runs on 32-48 px images."""
    return SmallCNN(num_classes, in_channels, [32, 64, 128, 128], WIRINGS[wiring])
