"""Wide ResNets as in the official FixMatch code (and WRN-var-37-2 as in USB for larger inputs).

Official details kept: pre-activation blocks, BatchNorm momentum 0.001 (TF decay 0.999),
leaky ReLU with slope 0.1, He-normal conv init (fan_out), Xavier-normal classifier, zero biases.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fixmatch.models import register

BN_MOMENTUM = 0.001
LEAK = 0.1


def bn_act(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels, momentum=BN_MOMENTUM), nn.LeakyReLU(LEAK, inplace=True))


class PreActBlock(nn.Module):
    """BN-act-conv-BN-act-conv with an identity (or 1x1 conv) shortcut.

    `preact_shortcut`: the first block of the network feeds the activated input to the shortcut
    too (the official `activate_before_residual`); other blocks feed it the raw input.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, preact_shortcut: bool = False):
        super().__init__()
        self.pre = bn_act(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.mid = bn_act(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None if (c_in == c_out and stride == 1) else nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False)
        self.preact_shortcut = preact_shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pre(x)
        out = self.conv2(self.mid(self.conv1(a)))
        skip_in = a if (self.preact_shortcut or self.shortcut is not None) else x
        return out + (skip_in if self.shortcut is None else self.shortcut(skip_in))


class WideResNet(nn.Module):
    """WRN with `len(strides)` groups of `blocks` blocks; group g has width widths[g]."""

    def __init__(self, num_classes: int, in_channels: int, widths: list[int], blocks: int,
                 strides: list[int], stem: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        layers, c = [], stem
        for g, (w, s) in enumerate(zip(widths, strides)):
            for b in range(blocks):
                layers.append(PreActBlock(c, w, s if b == 0 else 1, preact_shortcut=(g == 0 and b == 0)))
                c = w
        self.blocks = nn.Sequential(*layers)
        self.head_act = bn_act(c)
        self.fc = nn.Linear(c, num_classes)
        self.num_features = c
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_act(self.blocks(self.stem(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu", a=LEAK)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)


def wrn(depth: int, widen: int, num_classes: int, in_channels: int) -> WideResNet:
    blocks = (depth - 4) // 6
    return WideResNet(num_classes, in_channels, [16 * widen, 32 * widen, 64 * widen], blocks, [1, 2, 2])


@register("wrn28_2")
def wrn28_2(num_classes: int, in_channels: int = 3) -> WideResNet:
    return wrn(28, 2, num_classes, in_channels)


@register("wrn28_8")
def wrn28_8(num_classes: int, in_channels: int = 3) -> WideResNet:
    return wrn(28, 8, num_classes, in_channels)


@register("wrn37_2")
def wrn37_2(num_classes: int, in_channels: int = 3) -> WideResNet:
    """WRN-var-37-2 (USB/SSL_FER): four groups of 4 blocks, widths 32..256, for 48-96 px inputs.
    37 = stem + 4 groups x 4 blocks x 2 convs + 4 shortcut convs."""
    return WideResNet(num_classes, in_channels, [32, 64, 128, 256], 4, [1, 2, 2, 2])


@register("wrn10_1")
def wrn10_1(num_classes: int, in_channels: int = 3) -> WideResNet:
    """A tiny WRN (one block per group) for CPU tests and quick runs."""
    return wrn(10, 1, num_classes, in_channels)
