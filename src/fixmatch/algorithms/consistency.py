"""The pieces FlexMatch, FreeMatch and SoftMatch share with FixMatch's loss (USB's
`consistency_loss(..., 'ce', mask)` with hard pseudo-labels, and the statistics the engine logs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
