"""Distribution alignment as USB's DistAlignEMAHook (semilearn/algorithms/hooks/dist_align.py), shared
by AdaMatch and SoftMatch: the weak view's probabilities times (p_target + 1e-6) / (p_model + 1e-6),
renormalised. p_model is an EMA of the unlabeled batch's mean probabilities (the first batch's mean
on the first step); p_target is uniform, or (`from_labeled`, USB's p_target_type='model') an EMA of
the labeled batch's mean probabilities from uniform. Each call updates them, then aligns."""

from __future__ import annotations

from typing import Callable

import torch


class DistAlignEMA:
    def __init__(
        self,
        num_classes: int,
        momentum: float,
        from_labeled: bool,
        device: torch.device | str,
        gather: Callable[[torch.Tensor], torch.Tensor],
    ):
        self.m, self.from_labeled, self.gather = momentum, from_labeled, gather
        self.p_model = torch.zeros(num_classes, device=device)  # the reference's None until the first batch
        self.p_model_seen = torch.zeros((), dtype=torch.bool, device=device)
        self.p_target = torch.ones(num_classes, device=device) / num_classes

    @torch.no_grad()
    def __call__(self, probs_u: torch.Tensor, probs_x: torch.Tensor) -> torch.Tensor:
        """Update p_model, then p_target (both from every rank's batch, as the reference), then align."""
        mean_u = self.gather(probs_u).mean(dim=0)
        ema = self.p_model * self.m + mean_u * (1 - self.m)
        self.p_model.copy_(torch.where(self.p_model_seen, ema, mean_u))
        self.p_model_seen.fill_(True)
        if self.from_labeled:
            self.p_target.copy_(self.p_target * self.m + self.gather(probs_x).mean(dim=0) * (1 - self.m))
        aligned = probs_u * (self.p_target + 1e-6) / (self.p_model + 1e-6)
        return aligned / aligned.sum(dim=-1, keepdim=True)
