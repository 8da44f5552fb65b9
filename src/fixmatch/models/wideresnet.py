"""Wide ResNets wired as the official FixMatch network (libml/models.py, `ResNet.classifier`), and
WRN-var-37-2 (four groups, as the official code builds for 96 px STL-10 with filters=32, scales=4).

Per block (`residual` in the official code): a = leaky_relu(BN(x)); out = conv3x3(leaky_relu(BN(
conv3x3(a, stride)))); shortcut = x, or a only in the network's first block
(`activate_before_residual`); a 1x1 conv on the shortcut when the width changes. After the last
group: leaky_relu(BN(.)), global mean, dense. The official convs carry biases (WRN-28-2:
1,469,642 parameters); every conv here feeds a BatchNorm (directly or through the identity path),
which removes any per-channel constant, so they are left out (1,467,610): see the README table.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fixmatch.models.layers import LEAK, WIRINGS, Wiring, batch_norm, conv, init_official
from fixmatch.models.registry import register


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, first: bool, wiring: Wiring):
        super().__init__()
        self.pre = nn.Sequential(batch_norm(c_in, wiring), nn.LeakyReLU(LEAK, inplace=True))
        self.conv1 = conv(c_in, c_out, 3, stride, wiring)
        self.mid = nn.Sequential(batch_norm(c_out, wiring), nn.LeakyReLU(LEAK, inplace=True))
        self.conv2 = conv(c_out, c_out, 3, 1, wiring)
        self.shortcut = None if c_in == c_out else conv(c_in, c_out, 1, stride, wiring)
        # official: only the first block's shortcut reads the activated input
        self.shortcut_reads_activation = first or (
            wiring.shortcut_from_activation == "all" and self.shortcut is not None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pre(x)
        out = self.conv2(self.mid(self.conv1(a)))
        skip = a if self.shortcut_reads_activation else x
        return out + (skip if self.shortcut is None else self.shortcut(skip))


class WideResNet(nn.Module):
    """`len(widths)` groups of `blocks` blocks; group g has width widths[g] and the first block of
    every group but the first halves the resolution."""

    def __init__(
        self, num_classes: int, in_channels: int, widths: list[int], blocks: int, wiring: Wiring, stem: int = 16
    ):
        super().__init__()
        self.stem = conv(in_channels, stem, 3, 1, wiring)
        layers, c = [], stem
        for g, width in enumerate(widths):
            for b in range(blocks):
                layers.append(PreActBlock(c, width, 2 if (g and not b) else 1, g == 0 and b == 0, wiring))
                c = width
        self.blocks = nn.Sequential(*layers)
        self.head_act = nn.Sequential(batch_norm(c, wiring), nn.LeakyReLU(LEAK, inplace=True))
        self.fc = nn.Linear(c, num_classes)
        self.num_features = c
        init_official(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_act(self.blocks(self.stem(x))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def wrn(depth: int, widen: int, num_classes: int, in_channels: int, wiring: str) -> WideResNet:
    """WRN-depth-widen as the official code builds it: filters=16*widen, repeat=(depth-4)/6, 3 scales."""
    widths = [16 * widen, 32 * widen, 64 * widen]
    return WideResNet(num_classes, in_channels, widths, (depth - 4) // 6, WIRINGS[wiring])


@register
def wrn28_2(num_classes: int, in_channels: int = 3, wiring: str = "official") -> WideResNet:
    return wrn(28, 2, num_classes, in_channels, wiring)


@register
def wrn28_8(num_classes: int, in_channels: int = 3, wiring: str = "official") -> WideResNet:
    return wrn(28, 8, num_classes, in_channels, wiring)


@register
def wrn37_2(num_classes: int, in_channels: int = 3, wiring: str = "official") -> WideResNet:
    """WRN-var-37-2: four groups of 4 blocks, widths 32..256, for 48-96 px inputs.
    37 = stem + 4 groups x 4 blocks x 2 convs + 4 shortcut convs."""
    return WideResNet(num_classes, in_channels, [32, 64, 128, 256], 4, WIRINGS[wiring])


@register
def wrn10_1(num_classes: int, in_channels: int = 3, wiring: str = "official") -> WideResNet:
    """A tiny WRN (one block per group) for CPU tests and quick runs."""
    return wrn(10, 1, num_classes, in_channels, wiring)
