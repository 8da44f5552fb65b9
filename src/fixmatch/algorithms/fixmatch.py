"""The FixMatch loss (Sohn et al. 2020), as in the official code (fixmatch.py, `model`), and the pieces
of it its family (FlexMatch, FreeMatch, SoftMatch, ...) shares: USB's `consistency_loss(..., 'ce',
mask)` with hard pseudo-labels, and the statistics the engine logs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fixmatch.algorithms.base import Algorithm, AlgorithmSetup, register
from fixmatch.algorithms.options import opt


def masked_ce(logits_us: torch.Tensor, pseudo: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over ALL unlabeled images of CE(strong view, pseudo-label) * mask (a 0/1 mask or a weight)."""
    return (F.cross_entropy(logits_us, pseudo, reduction="none") * mask).mean()


def step_stats(loss_x, loss_u, pseudo, mask) -> dict:
    """Per image pseudo-labels and mask (weights for SoftMatch) for the engine to score; the rest scalars."""
    return {
        "loss_x": loss_x.detach(),
        "loss_u": loss_u.detach(),
        "mask_rate": mask.mean(),
        "pseudo_labels": pseudo,
        "mask": mask,
    }


@dataclass
class Options:
    threshold: float = opt(0.95, "pseudo-label confidence threshold tau (reference 0.95)", within="(0, 1]")
    lambda_u: float = opt(1.0, "weight of the unlabeled loss (reference 1)", within="[0, inf)")


@register
class FixMatch(Algorithm):
    """l_s + lambda_u * l_u, with l_u the masked cross-entropy of strong-view logits against the
    hard pseudo-labels of the weak view (confidence >= threshold), averaged over ALL mu*B unlabeled
    images, masked ones counting as zero (the official normalisation).

    It never sees the true labels of unlabeled images: the engine scores the returned pseudo-labels."""

    def __init__(self, threshold: float = 0.95, lambda_u: float = 1.0):
        self.threshold = threshold
        self.lambda_u = lambda_u

    @classmethod
    def from_config(cls, cfg, setup: AlgorithmSetup) -> FixMatch:
        return cls(threshold=cfg.threshold, lambda_u=cfg.lambda_u)

    def __call__(self, logits_x, y_x, logits_uw, logits_us, idx_u=None) -> tuple[torch.Tensor, dict]:
        loss_x = F.cross_entropy(logits_x, y_x)
        probs = logits_uw.detach().softmax(dim=-1)  # the weak view labels, it is not trained
        confidence, pseudo = probs.max(dim=-1)
        mask = (confidence >= self.threshold).float()
        loss_u = masked_ce(logits_us, pseudo, mask)
        return loss_x + self.lambda_u * loss_u, step_stats(loss_x, loss_u, pseudo, mask)
