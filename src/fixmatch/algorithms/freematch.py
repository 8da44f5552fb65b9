"""FreeMatch (Wang et al. 2022, arXiv 2205.07246): self-adaptive thresholds and the self-adaptive
fairness loss, as in the authors' reference code (USB, semilearn/algorithms/freematch).

Three EMAs (momentum `--ema-p`) of the weak view's predictions on the unlabeled batch: the mean
confidence time_p (the global threshold; with `--freematch-use-quantile` its 0.8 quantile), the mean
class probabilities p_model (local thresholds: time_p * p_model[c] / max p_model) and the histogram
of predicted classes label_hist. Each step first updates them with this batch, then masks with them.
The fairness loss (weight `--lambda-e`) compares the EMAs, normalised by label_hist, with the strong
view's mean prediction over the masked images, normalised by their histogram; it is 0 when no image
is masked in."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fixmatch.algorithms.base import AlgorithmSetup, TensorState, no_gather, register
from fixmatch.algorithms.fixmatch import masked_ce, step_stats
from fixmatch.algorithms.options import opt

CLIP_MAX = 0.95  # USB's clip_thresh bound on the global threshold (its SVHN configs)
QUANTILE = 0.8  # USB's use_quantile: the batch's confidence level (freematch/utils.py)


@dataclass
class Options:
    lambda_u: float = opt(1.0, "weight of the unlabeled loss (reference 1)", within="[0, inf)")
    ema_p: float = opt(0.999, "momentum of the EMAs of the predictions (reference 0.999)", within="[0, 1)")
    lambda_e: float = opt(0.001, "weight of the self-adaptive fairness loss (reference 0.001)", within="[0, inf)")
    freematch_clip_thresh: bool | None = opt(
        None, "clip the global threshold at 0.95 (reference: on for SVHN, off elsewhere)", fallback=False
    )
    freematch_use_quantile: bool = opt(
        False, "global threshold from the 0.8 quantile of the batch's confidences, not their mean (reference off)"
    )


def inverse_or_zero(x: torch.Tensor) -> torch.Tensor:
    """1/x with the infinities (x = 0) replaced by 0 (the reference's replace_inf_to_zero)."""
    inv = 1 / x
    return torch.where(torch.isinf(inv), torch.zeros_like(inv), inv)


def fairness_loss(mask: torch.Tensor, logits_us: torch.Tensor, p_model: torch.Tensor, label_hist: torch.Tensor):
    """The reference's entropy_loss over the masked-in images, written without selecting them (no
    host sync): per-class sums weighted by the 0/1 mask. With no image masked in, 0 (as the reference)."""
    num_classes = logits_us.shape[1]
    n = mask.sum()
    prob_s = logits_us.softmax(dim=-1)
    hist_s = (F.one_hot(prob_s.argmax(dim=-1), num_classes).to(prob_s.dtype) * mask[:, None]).sum(0)
    hist_s = hist_s / n.clamp_min(1)
    mod_prob_model = p_model * inverse_or_zero(label_hist).detach()
    mod_prob_model = mod_prob_model / mod_prob_model.sum()
    mean_prob_s = (prob_s * mask[:, None]).sum(0) / n.clamp_min(1)
    mod_mean_prob_s = mean_prob_s * inverse_or_zero(hist_s).detach()
    # tiny floor: only reached when nothing is masked in (the result is then discarded below)
    mod_mean_prob_s = mod_mean_prob_s / mod_mean_prob_s.sum().clamp_min(torch.finfo(prob_s.dtype).tiny)
    loss = (mod_prob_model * torch.log(mod_mean_prob_s + 1e-12)).sum()
    return torch.where(n > 0, loss, torch.zeros_like(loss))


@register
class FreeMatch(TensorState):
    STATE = ("p_model", "label_hist", "time_p")

    def __init__(
        self,
        num_classes: int,
        lambda_u: float = 1.0,
        lambda_e: float = 0.001,
        ema_p: float = 0.999,
        clip_thresh: bool = False,
        use_quantile: bool = False,
        device: torch.device | str = "cpu",
        gather=no_gather,
    ):
        self.lambda_u, self.lambda_e, self.m, self.clip_thresh, self.gather = (
            lambda_u,
            lambda_e,
            ema_p,
            clip_thresh,
            gather,
        )
        self.use_quantile = use_quantile
        self.p_model = torch.ones(num_classes, device=device) / num_classes
        self.label_hist = torch.ones(num_classes, device=device) / num_classes
        self.time_p = self.p_model.mean()

    @classmethod
    def from_config(cls, cfg, setup: AlgorithmSetup) -> FreeMatch:
        return cls(
            setup.num_classes,
            cfg.lambda_u,
            cfg.lambda_e,
            cfg.ema_p,
            cfg.freematch_clip_thresh,
            cfg.freematch_use_quantile,
            setup.device,
            setup.gather,
        )

    def __call__(self, logits_x, y_x, logits_uw, logits_us, idx_u=None):
        loss_x = F.cross_entropy(logits_x, y_x)
        probs = logits_uw.detach().softmax(dim=-1)
        self.update(self.gather(probs))
        max_probs, max_idx = probs.max(dim=-1)
        mod = self.p_model / self.p_model.max()
        mask = max_probs.ge(self.time_p * mod[max_idx]).to(max_probs.dtype)
        pseudo = logits_uw.detach().argmax(dim=-1)
        loss_u = masked_ce(logits_us, pseudo, mask)
        loss_e = fairness_loss(mask, logits_us, self.p_model, self.label_hist)
        loss = loss_x + self.lambda_u * loss_u + self.lambda_e * loss_e
        return loss, {**step_stats(loss_x, loss_u, pseudo, mask), "loss_e": loss_e.detach()}

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        m = self.m
        max_probs, max_idx = probs.max(dim=-1, keepdim=True)
        level = torch.quantile(max_probs, QUANTILE) if self.use_quantile else max_probs.mean()
        time_p = self.time_p * m + (1 - m) * level
        if self.clip_thresh:
            time_p = torch.clip(time_p, 0.0, CLIP_MAX)
        self.time_p.copy_(time_p)
        self.p_model.copy_(self.p_model * m + (1 - m) * probs.mean(dim=0))
        # the reference's bincount, into a fixed size (bincount reads its input's max on the host)
        hist = torch.zeros_like(self.p_model).index_add_(0, max_idx.reshape(-1), torch.ones_like(probs[:, 0]))
        self.label_hist.copy_(self.label_hist * m + (1 - m) * (hist / hist.sum()))
