"""AdaMatch (Berthelot et al. 2021, arXiv 2106.04732) in its semi-supervised form, as in USB
(semilearn/algorithms/adamatch with hooks/dist_align.py's DistAlignEMAHook, p_target_type='model').

Distribution alignment (fixmatch.algorithms.dist_align, momentum `--ema-p`) towards an EMA of the
labeled batch's predictions. Relative confidence threshold: an image is masked in when its aligned
confidence reaches tau (`--threshold`) times the labeled batch's mean confidence. The pseudo-label
is the argmax of the aligned probabilities (or, with `--no-adamatch-hard-label`, the aligned
probabilities themselves; USB passes them on unsharpened, so its `T` plays no part)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fixmatch.algorithms.base import AlgorithmSetup, TensorState, no_gather, register
from fixmatch.algorithms.dist_align import DistAlignEMA
from fixmatch.algorithms.fixmatch import masked_ce, step_stats
from fixmatch.algorithms.options import opt


@dataclass
class Options:
    threshold: float = opt(0.95, "pseudo-label confidence threshold tau (reference 0.95)", within="(0, 1]")
    lambda_u: float = opt(1.0, "weight of the unlabeled loss (reference 1)", within="[0, inf)")
    ema_p: float = opt(0.999, "momentum of the EMAs of the predictions (reference 0.999)", within="[0, 1)")
    adamatch_hard_label: bool = opt(
        True, "hard pseudo-labels (argmax of the aligned probabilities), else the probabilities (reference on)"
    )


@register
class AdaMatch(TensorState):
    STATE = ("p_model", "p_model_seen", "p_target")

    def __init__(
        self,
        num_classes: int,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        ema_p: float = 0.999,
        hard_label: bool = True,
        device: torch.device | str = "cpu",
        gather=no_gather,
    ):
        self.threshold, self.lambda_u, self.m, self.hard_label = threshold, lambda_u, ema_p, hard_label
        self.align = DistAlignEMA(num_classes, ema_p, from_labeled=True, device=device, gather=gather)
        # its tensors, updated in place, are the state
        a = self.align
        self.p_model, self.p_model_seen, self.p_target = a.p_model, a.p_model_seen, a.p_target

    @classmethod
    def from_config(cls, cfg, setup: AlgorithmSetup) -> AdaMatch:
        return cls(
            setup.num_classes,
            cfg.threshold,
            cfg.lambda_u,
            cfg.ema_p,
            cfg.adamatch_hard_label,
            setup.device,
            setup.gather,
        )

    def __call__(self, logits_x, y_x, logits_uw, logits_us, idx_u=None):
        loss_x = F.cross_entropy(logits_x, y_x)
        probs_x = logits_x.detach().softmax(dim=-1)
        probs_u = self.align(logits_uw.detach().softmax(dim=-1), probs_x)
        # relative threshold: from this rank's labeled batch, as the reference's masking hook
        cutoff = probs_x.max(dim=-1).values.mean() * self.threshold
        max_probs, pseudo = probs_u.max(dim=-1)
        mask = max_probs.ge(cutoff).to(max_probs.dtype)
        loss_u = masked_ce(logits_us, pseudo if self.hard_label else probs_u, mask)
        return loss_x + self.lambda_u * loss_u, step_stats(loss_x, loss_u, pseudo, mask)
