"""FlexMatch (Zhang et al. 2021, arXiv 2110.08263): FixMatch with Curriculum Pseudo Labeling, as in
the authors' reference code (USB, semilearn/algorithms/flexmatch; TorchSSL models/flexmatch).

Each unlabeled image of the pool remembers the class it was last confidently (>= tau) predicted as
(-1: never). The learning effect of class c is the count of images remembered as c, divided by the
largest count, the count of never-selected images included (`--flexmatch-warmup`, the reference
default: thresholds start low and rise while most images are still unused) or excluded. Its
threshold is tau * beta / (2 - beta) (the convex mapping). The mask of a step uses the learning
effects from before the step; then the step's confident predictions are remembered and the
learning effects recomputed, unless every image remembers the same value (the reference's guard)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fixmatch.algorithms.base import AlgorithmSetup, TensorState, no_gather, register
from fixmatch.algorithms.fixmatch import masked_ce, step_stats
from fixmatch.algorithms.options import opt


@dataclass
class Options:
    threshold: float = opt(0.95, "pseudo-label confidence threshold tau (reference 0.95)", within="(0, 1]")
    lambda_u: float = opt(1.0, "weight of the unlabeled loss (reference 1)", within="[0, inf)")
    flexmatch_warmup: bool = opt(
        True, "learning effects divided by the largest count, never-selected images included (reference on)"
    )


@register
class FlexMatch(TensorState):
    STATE = ("selected_label", "classwise_acc")

    def __init__(
        self,
        num_classes: int,
        pool_size: int,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        warmup: bool = True,
        device: torch.device | str = "cpu",
        gather=no_gather,
    ):
        self.threshold, self.lambda_u, self.warmup, self.gather = threshold, lambda_u, warmup, gather
        self.pool_size = pool_size
        # one slot more than the pool: unselected images write their label there (no host sync)
        self.slots = torch.full((pool_size + 1,), -1, dtype=torch.long, device=device)
        self.selected_label = self.slots[:pool_size]
        self.classwise_acc = torch.zeros(num_classes, device=device)

    @classmethod
    def from_config(cls, cfg, setup: AlgorithmSetup) -> FlexMatch:
        return cls(
            setup.num_classes,
            setup.pool_size,
            cfg.threshold,
            cfg.lambda_u,
            cfg.flexmatch_warmup,
            setup.device,
            setup.gather,
        )

    def __call__(self, logits_x, y_x, logits_uw, logits_us, idx_u: torch.Tensor):
        loss_x = F.cross_entropy(logits_x, y_x)
        probs = logits_uw.detach().softmax(dim=-1)
        max_probs, pseudo = probs.max(dim=-1)
        beta = self.classwise_acc[pseudo]
        mask = max_probs.ge(self.threshold * (beta / (2.0 - beta))).to(max_probs.dtype)  # convex mapping
        self.remember(self.gather(idx_u), self.gather(pseudo), self.gather(max_probs.ge(self.threshold)))
        loss_u = masked_ce(logits_us, pseudo, mask)
        return loss_x + self.lambda_u * loss_u, step_stats(loss_x, loss_u, pseudo, mask)

    @torch.no_grad()
    def remember(self, idx: torch.Tensor, pseudo: torch.Tensor, select: torch.Tensor) -> None:
        """selected_label[idx[select]] = pseudo[select], then the learning effects from the counts."""
        target = torch.where(select, idx, self.pool_size)  # the spare slot for the unselected
        self.slots.index_put_((target,), pseudo)
        self.slots[self.pool_size] = -1
        # counts[0]: never selected (-1); index_add_ into a fixed size, as bincount would read its max on the host
        counts = torch.zeros(self.classwise_acc.numel() + 1, dtype=torch.float64, device=self.slots.device)
        counts.index_add_(0, self.selected_label + 1, torch.ones_like(self.selected_label, dtype=torch.float64))
        largest = counts.max() if self.warmup else counts[1:].max()
        acc = (counts[1:] / largest).to(self.classwise_acc.dtype)
        # the reference updates only while not every image holds the same value
        self.classwise_acc.copy_(torch.where(counts.max() < self.pool_size, acc, self.classwise_acc))
