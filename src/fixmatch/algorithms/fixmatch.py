"""The FixMatch loss (Sohn et al. 2020), as in the official code (fixmatch.py, `model`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fixmatch.algorithms.base import Algorithm, AlgorithmSetup


class FixMatch(Algorithm):
    """l_s + lambda_u * l_u, with l_u the masked cross-entropy of strong-view logits against the
    hard pseudo-labels of the weak view (confidence >= threshold).

    It never sees the true labels of unlabeled images: the engine scores the returned pseudo-labels."""

    uses_unlabeled = True

    def __init__(self, threshold: float = 0.95, lambda_u: float = 1.0):
        self.threshold = threshold
        self.lambda_u = lambda_u

    @classmethod
    def from_config(cls, cfg, setup: AlgorithmSetup) -> FixMatch:
        return cls(threshold=cfg.threshold, lambda_u=cfg.lambda_u)

    def __call__(
        self, logits_x: torch.Tensor, y_x: torch.Tensor, logits_uw: torch.Tensor, logits_us: torch.Tensor
    ) -> tuple[torch.Tensor, dict]:
        loss_x = F.cross_entropy(logits_x, y_x)
        probs = logits_uw.detach().softmax(dim=-1)  # the weak view labels, it is not trained
        confidence, pseudo = probs.max(dim=-1)
        mask = (confidence >= self.threshold).float()
        # mean over ALL mu*B unlabeled images, masked ones count as zero (official normalisation)
        loss_u = (F.cross_entropy(logits_us, pseudo, reduction="none") * mask).mean()
        stats = {
            "loss_x": loss_x.detach(),
            "loss_u": loss_u.detach(),
            "mask_rate": mask.mean(),
            "pseudo_labels": pseudo,
            "mask": mask,
        }  # per image, for monitoring only
        return loss_x + self.lambda_u * loss_u, stats
