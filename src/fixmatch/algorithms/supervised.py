"""Supervised-only baseline: the labeled cross-entropy alone (no unlabeled images are drawn)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fixmatch.algorithms.base import Algorithm, register


@register
class Supervised(Algorithm):
    uses_unlabeled = False

    def __init__(self, **_):
        pass

    def __call__(self, logits_x: torch.Tensor, y_x: torch.Tensor, *_unused) -> tuple[torch.Tensor, dict]:
        loss_x = F.cross_entropy(logits_x, y_x)
        return loss_x, {"loss_x": loss_x.detach()}
