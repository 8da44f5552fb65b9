"""Building blocks shared by the networks: the official layer settings and the wiring variants.

The official FixMatch network (libml/models.py) is TensorFlow: BatchNorm epsilon 1e-3 (TF's default),
'SAME' padding (for a strided 3x3 conv on an even input TF pads only the bottom/right, PyTorch's
padding=1 pads both sides, which shifts the sampling grid by one pixel), He-normal conv kernels and
a truncated Glorot-normal classifier. `Wiring` names the variants a saved model may have been built with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

LEAK = 0.1  # leaky ReLU slope (official)


@dataclass(frozen=True)
class Wiring:
    bn_eps: float
    tf_same_padding: bool  # strided convs pad like TF 'SAME' (bottom/right only on even inputs)
    shortcut_from_activation: str  # "first" (official: only the network's first block) or "all"


WIRINGS = {
    "official": Wiring(bn_eps=1e-3, tf_same_padding=True, shortcut_from_activation="first"),
    # The wiring of the released FER2013 model, trained before the official one: every 1x1 shortcut
    # conv reads the activated input, BatchNorm eps 1e-5, PyTorch's symmetric padding. It goes when
    # that model is retrained (docs/faithfulness.md, "The released model's wiring").
    "fixmatch-0.1": Wiring(bn_eps=1e-5, tf_same_padding=False, shortcut_from_activation="all"),
}
DEFAULT_WIRING = "official"
LEGACY_WIRING = "fixmatch-0.1"  # what a model file without an "arch_variant" entry was built with


def batch_norm(channels: int, wiring: Wiring) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=wiring.bn_eps)  # momentum: set once by models.build_model


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) of one spatial dimension."""
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """A bias-free conv with TF 'SAME' padding. Stride 1 pads symmetrically (PyTorch's own padding,
    no extra kernel); a strided conv pads from the input's static size in forward."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__(c_in, c_out, kernel, stride, padding=kernel // 2 if stride == 1 else 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            (top, bottom), (left, right) = (
                same_padding(n, k, s) for n, k, s in zip(x.shape[-2:], self.kernel_size, self.stride)
            )
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def conv(c_in: int, c_out: int, kernel: int, stride: int, wiring: Wiring) -> nn.Conv2d:
    if wiring.tf_same_padding:
        return Conv2dSame(c_in, c_out, kernel, stride)
    return nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)


def init_official(model: nn.Module) -> None:
    """Conv kernels ~ N(0, 2 / (k*k*c_out)) (official `rsqrt(0.5*k*k*f)`); classifier: TF's
    glorot_normal (truncated at 2 std, std corrected for the truncation), zero bias; BN 1 and 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (k * m.out_channels)))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            std = math.sqrt(2.0 / (m.in_features + m.out_features)) / 0.87962566103423978
            nn.init.trunc_normal_(m.weight, 0.0, std, -2 * std, 2 * std)
            nn.init.zeros_(m.bias)
