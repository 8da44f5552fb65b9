"""SoftMatch (Chen et al. 2023, arXiv 2301.10921): truncated-Gaussian weights and uniform
distribution alignment, as in the authors' reference code (USB, semilearn/algorithms/softmatch and
hooks/dist_align.py's DistAlignEMAHook with a uniform target).

Uniform alignment (fixmatch.algorithms.dist_align): the weak view's probabilities are multiplied by
(1/C + 1e-6) / (p_model + 1e-6) and renormalised, p_model an EMA (momentum `--ema-p`) of the batch's
mean probabilities (the first batch's mean on the first step); `--no-softmatch-dist-uniform` aligns
to an EMA of the labeled batch's predictions instead (USB's dist_uniform=False). The weight of an
image is exp(-(min(conf - mu, 0))^2 / (2 var / n_sigma^2)), conf its aligned confidence, mu and var
EMAs of the batch's mean and unbiased variance of the aligned confidences (from 1/C and 1), each
step updated before weighting; with `--softmatch-per-class` one mean and variance per pseudo-label
class (USB's per_class). The pseudo-label is the argmax of the weak view's logits, not of the
aligned probabilities (as the reference)."""

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
    lambda_u: float = opt(1.0, "weight of the unlabeled loss (reference 1)", within="[0, inf)")
    ema_p: float = opt(0.999, "momentum of the EMAs of the predictions (reference 0.999)", within="[0, 1)")
    softmatch_n_sigma: float = opt(
        2.0, "width of the truncated Gaussian, in standard deviations (reference 2)", within="(0, inf)"
    )
    softmatch_dist_uniform: bool = opt(
        True, "align to the uniform distribution, else to an EMA of the labeled predictions (reference on)"
    )
    softmatch_per_class: bool = opt(
        False, "one Gaussian per pseudo-label class instead of one for every image (reference off)"
    )


@register
class SoftMatch(TensorState):
    STATE = ("p_model", "p_model_seen", "p_target", "prob_max_mu_t", "prob_max_var_t")

    def __init__(
        self,
        num_classes: int,
        lambda_u: float = 1.0,
        ema_p: float = 0.999,
        n_sigma: float = 2.0,
        dist_uniform: bool = True,
        per_class: bool = False,
        device: torch.device | str = "cpu",
        gather=no_gather,
    ):
        self.lambda_u, self.m, self.n_sigma, self.per_class, self.gather = lambda_u, ema_p, n_sigma, per_class, gather
        self.align = DistAlignEMA(num_classes, ema_p, from_labeled=not dist_uniform, device=device, gather=gather)
        # its tensors, updated in place, are the state
        a = self.align
        self.p_model, self.p_model_seen, self.p_target = a.p_model, a.p_model_seen, a.p_target
        shape = (num_classes,) if per_class else ()  # softmatch/utils.py:24-29
        self.prob_max_mu_t = torch.full(shape, 1.0 / num_classes, device=device)
        self.prob_max_var_t = torch.ones(shape, device=device)

    @classmethod
    def from_config(cls, cfg, setup: AlgorithmSetup) -> SoftMatch:
        return cls(
            setup.num_classes,
            cfg.lambda_u,
            cfg.ema_p,
            cfg.softmatch_n_sigma,
            cfg.softmatch_dist_uniform,
            cfg.softmatch_per_class,
            setup.device,
            setup.gather,
        )

    def __call__(self, logits_x, y_x, logits_uw, logits_us, idx_u=None):
        loss_x = F.cross_entropy(logits_x, y_x)
        probs = self.align(logits_uw.detach().softmax(dim=-1), logits_x.detach().softmax(dim=-1))
        self.update_gaussian(self.gather(probs))
        max_probs, max_idx = probs.max(dim=-1)
        mu, var = self.prob_max_mu_t, self.prob_max_var_t
        if self.per_class:
            mu, var = mu[max_idx], var[max_idx]
        gap = torch.clamp(max_probs - mu, max=0.0)
        weight = torch.exp(-(gap**2) / (2 * var / (self.n_sigma**2)))
        pseudo = logits_uw.detach().argmax(dim=-1)
        loss_u = masked_ce(logits_us, pseudo, weight)
        return loss_x + self.lambda_u * loss_u, step_stats(loss_x, loss_u, pseudo, weight)

    @torch.no_grad()
    def update_gaussian(self, probs: torch.Tensor) -> None:
        if self.per_class:
            return self.update_per_class(*probs.max(dim=-1))
        max_probs = probs.max(dim=-1).values
        # The reference adds (1 - m) * x.item(): a double product, rounded once to float32. The same
        # in float64 on the device, without reading x back to the host.
        mu, var = torch.mean(max_probs), torch.var(max_probs, unbiased=True)
        self.prob_max_mu_t.copy_(self.m * self.prob_max_mu_t + ((1 - self.m) * mu.double()).float())
        self.prob_max_var_t.copy_(self.m * self.prob_max_var_t + ((1 - self.m) * var.double()).float())

    @torch.no_grad()
    def update_per_class(self, max_probs: torch.Tensor, max_idx: torch.Tensor) -> None:
        """softmatch/utils.py:41-50: each class's mean and unbiased variance over the images predicted
        as it, (0, 1) for a class with fewer than two, then float32 EMAs. Per-class sums (index_add_)
        instead of the reference's loop over boolean selections: no host reads."""
        zeros = torch.zeros_like(self.prob_max_mu_t)
        count = zeros.index_add(0, max_idx, torch.ones_like(max_probs))
        mean = zeros.index_add(0, max_idx, max_probs) / count.clamp_min(1)
        square = zeros.index_add(0, max_idx, (max_probs - mean[max_idx]) ** 2)
        several = count > 1
        mu = torch.where(several, mean, zeros)
        var = torch.where(several, square / (count - 1).clamp_min(1), torch.ones_like(zeros))
        self.prob_max_mu_t.copy_(self.m * self.prob_max_mu_t + (1 - self.m) * mu)
        self.prob_max_var_t.copy_(self.m * self.prob_max_var_t + (1 - self.m) * var)
