"""SoftMatch (Chen et al. 2023, arXiv 2301.10921): truncated-Gaussian weights and uniform
distribution alignment, as in the authors' reference code (USB, semilearn/algorithms/softmatch and
hooks/dist_align.py's DistAlignEMAHook with a uniform target).

Uniform alignment: the weak view's probabilities are multiplied by (1/C + 1e-6) / (p_model + 1e-6)
and renormalised, p_model an EMA (momentum `--ema-p`) of the batch's mean probabilities (the first
batch's mean on the first step). The weight of an image is exp(-(min(conf - mu, 0))^2 / (2 var /
n_sigma^2)), conf its aligned confidence, mu and var EMAs of the batch's mean and unbiased variance of
the aligned confidences (from 1/C and 1), each step updated before weighting. The pseudo-label is the
argmax of the weak view's logits, not of the aligned probabilities (as the reference)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fixmatch.algorithms.base import AlgorithmSetup, TensorState, no_gather, register
from fixmatch.algorithms.fixmatch import masked_ce, step_stats
from fixmatch.algorithms.options import opt


@dataclass
class Options:
    lambda_u: float = opt(1.0, "weight of the unlabeled loss (reference 1)", within="[0, inf)")
    ema_p: float = opt(0.999, "momentum of the EMAs of the predictions (reference 0.999)", within="[0, 1)")
    softmatch_n_sigma: float = opt(
        2.0, "width of the truncated Gaussian, in standard deviations (reference 2)", within="(0, inf)"
    )


@register
class SoftMatch(TensorState):
    STATE = ("p_model", "p_model_seen", "prob_max_mu_t", "prob_max_var_t")

    def __init__(
        self,
        num_classes: int,
        lambda_u: float = 1.0,
        ema_p: float = 0.999,
        n_sigma: float = 2.0,
        device: torch.device | str = "cpu",
        gather=no_gather,
    ):
        self.lambda_u, self.m, self.n_sigma, self.gather = lambda_u, ema_p, n_sigma, gather
        self.p_target = torch.ones(num_classes, device=device) / num_classes
        self.p_model = torch.zeros(num_classes, device=device)  # the reference's None until the first batch
        self.p_model_seen = torch.zeros((), dtype=torch.bool, device=device)
        self.prob_max_mu_t = torch.tensor(1.0 / num_classes, device=device)
        self.prob_max_var_t = torch.tensor(1.0, device=device)

    @classmethod
    def from_config(cls, cfg, setup: AlgorithmSetup) -> SoftMatch:
        return cls(setup.num_classes, cfg.lambda_u, cfg.ema_p, cfg.softmatch_n_sigma, setup.device, setup.gather)

    def __call__(self, logits_x, y_x, logits_uw, logits_us, idx_u=None):
        loss_x = F.cross_entropy(logits_x, y_x)
        probs = self.align(logits_uw.detach().softmax(dim=-1))
        self.update_gaussian(self.gather(probs))
        max_probs = probs.max(dim=-1).values
        gap = torch.clamp(max_probs - self.prob_max_mu_t, max=0.0)
        weight = torch.exp(-(gap**2) / (2 * self.prob_max_var_t / (self.n_sigma**2)))
        pseudo = logits_uw.detach().argmax(dim=-1)
        loss_u = masked_ce(logits_us, pseudo, weight)
        return loss_x + self.lambda_u * loss_u, step_stats(loss_x, loss_u, pseudo, weight)

    @torch.no_grad()
    def align(self, probs: torch.Tensor) -> torch.Tensor:
        batch_mean = self.gather(probs).mean(dim=0)
        ema = self.p_model * self.m + batch_mean * (1 - self.m)
        self.p_model.copy_(torch.where(self.p_model_seen, ema, batch_mean))
        self.p_model_seen.fill_(True)
        aligned = probs * (self.p_target + 1e-6) / (self.p_model + 1e-6)
        return aligned / aligned.sum(dim=-1, keepdim=True)

    @torch.no_grad()
    def update_gaussian(self, probs: torch.Tensor) -> None:
        max_probs = probs.max(dim=-1).values
        # The reference adds (1 - m) * x.item(): a double product, rounded once to float32. The same
        # in float64 on the device, without reading x back to the host.
        mu, var = torch.mean(max_probs), torch.var(max_probs, unbiased=True)
        self.prob_max_mu_t.copy_(self.m * self.prob_max_mu_t + ((1 - self.m) * mu.double()).float())
        self.prob_max_var_t.copy_(self.m * self.prob_max_var_t + ((1 - self.m) * var.double()).float())
