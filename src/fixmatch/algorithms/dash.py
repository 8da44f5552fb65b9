"""Dash (Xu et al. 2021, arXiv 2109.00650): a dynamically decreasing loss threshold, as in USB
(semilearn/algorithms/dash: dash.py and utils.py's DashThresholdingHook).

After `--dash-warmup-steps` steps of the labeled loss alone, rho_init is set to the labeled loss;
then, every `--dash-decay-every` steps (the first at once), rho = max(C * gamma^-k * rho_init,
rho_min), k counting the decays. An unlabeled image is masked in when the cross-entropy of its weak
view against its own pseudo-label is <= rho. The pseudo-labels are soft (softmax of the weak logits /
T) until rho reaches rho_min, hard (argmax) from then on; the strong view is trained on them.

The algorithm counts its own steps (state `it`, in the checkpoint), so the schedule needs nothing
from the engine. Where USB differs (its warm-up runs before the step count and forwards the labeled
images alone; its rho_init is the evaluation set's loss), docs/ssl-algorithms.md says so."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fixmatch.algorithms.base import AlgorithmSetup, TensorState, no_gather, register
from fixmatch.algorithms.fixmatch import masked_ce, step_stats
from fixmatch.algorithms.options import opt
from fixmatch.errors import UserError

USB_STEPS, USB_WARMUP, USB_EPOCHS = 2**20, 2048, 1024  # its classic_cv run, warm-up and epochs
DECAY_EPOCHS = 10  # USB decays rho every 10 of its epochs (dash/utils.py)


@dataclass
class Options:
    lambda_u: float = opt(1.0, "weight of the unlabeled loss (reference 1)", within="[0, inf)")
    dash_gamma: float = opt(1.27, "each decay divides the threshold by gamma (reference 1.27)", within="[1, inf)")
    dash_c: float = opt(1.0001, "the threshold's constant factor C (reference 1.0001)", within="(0, inf)")
    dash_rho_min: float = opt(
        0.05, "the threshold's floor; reaching it switches to hard pseudo-labels (reference 0.05)", within="[0, inf)"
    )
    dash_temperature: float = opt(0.5, "temperature T of the soft pseudo-labels (reference 0.5)", within="(0, inf)")
    dash_warmup_steps: int | None = opt(
        None,
        "steps of the labeled loss alone before rho_init is taken (reference 2048 of a 2^20-step run; "
        "unset: the same fraction of --steps, steps // 512)",
        within="[0, inf)",
    )
    dash_decay_every: int | None = opt(
        None,
        "steps between two decays of the threshold (reference: 10 of the 1024 epochs of a run; "
        "unset: 10 * max(1, steps // 1024))",
        within="[1, inf)",
    )


def reference_schedule(steps: int) -> tuple[int, int]:
    """(warm-up steps, steps between decays): USB's, in proportion to a run of `steps` steps."""
    return steps * USB_WARMUP // USB_STEPS, DECAY_EPOCHS * max(1, steps // USB_EPOCHS)


@register
class Dash(TensorState):
    STATE = ("it", "rho_init", "rho", "rho_update_cnt")

    def __init__(
        self,
        lambda_u: float = 1.0,
        gamma: float = 1.27,
        c: float = 1.0001,
        rho_min: float = 0.05,
        temperature: float = 0.5,
        warmup_steps: int = USB_WARMUP,
        decay_every: int = DECAY_EPOCHS * USB_STEPS // USB_EPOCHS,
        device: torch.device | str = "cpu",
        gather=no_gather,
    ):
        self.lambda_u, self.gamma, self.c, self.rho_min, self.t = lambda_u, gamma, c, rho_min, temperature
        self.warmup_steps, self.decay_every, self.gather = warmup_steps, decay_every, gather
        self.it = torch.zeros((), dtype=torch.long, device=device)  # the calls so far: the step
        # float64, as the reference's Python floats; rho is compared in float32, as its scalar is
        self.rho_init = torch.zeros((), dtype=torch.float64, device=device)
        self.rho = torch.zeros((), dtype=torch.float64, device=device)
        self.rho_update_cnt = torch.zeros((), dtype=torch.long, device=device)

    @classmethod
    def from_config(cls, cfg, setup: AlgorithmSetup) -> Dash:
        warmup, every = reference_schedule(cfg.steps)
        warmup = warmup if cfg.dash_warmup_steps is None else cfg.dash_warmup_steps
        if warmup >= cfg.steps:  # the whole run would be supervised: say so rather than train it
            raise UserError(f"dash_warmup_steps ({warmup}) must be below steps ({cfg.steps})")
        return cls(
            cfg.lambda_u,
            cfg.dash_gamma,
            cfg.dash_c,
            cfg.dash_rho_min,
            cfg.dash_temperature,
            warmup,
            every if cfg.dash_decay_every is None else cfg.dash_decay_every,
            setup.device,
            setup.gather,
        )

    def __call__(self, logits_x, y_x, logits_uw, logits_us, idx_u=None):
        loss_x = F.cross_entropy(logits_x, y_x)
        warm = self.update(loss_x.detach())
        weak = logits_uw.detach()
        hard = self.rho == self.rho_min  # the reference's switch (an exact comparison, as its floats)
        soft = (weak / self.t).softmax(dim=-1)
        pseudo = weak.argmax(dim=-1)
        target = torch.where(hard, F.one_hot(pseudo, weak.shape[1]).to(soft.dtype), soft)
        loss_w = F.cross_entropy(weak, target, reduction="none")
        mask = (loss_w <= self.rho.float()).to(weak.dtype) * ~warm  # nothing during the warm-up
        loss_u = masked_ce(logits_us, target, mask)
        return loss_x + self.lambda_u * loss_u, {**step_stats(loss_x, loss_u, pseudo, mask), "rho": self.rho.float()}

    @torch.no_grad()
    def update(self, loss_x: torch.Tensor) -> torch.Tensor:
        """Count this step; take rho_init at the warm-up's end, decay rho on schedule (dash/utils.py:24-38).
        Returns whether this step is still in the warm-up."""
        t = self.it - self.warmup_steps  # steps since the warm-up (the reference resets its count)
        # the same rho_init on every rank: the global labeled batch's loss
        loss = self.gather(loss_x.reshape(1)).double().mean()
        self.rho_init.copy_(torch.where(t == 0, loss, self.rho_init))
        decay = (t >= 0) & (t % self.decay_every == 0)
        rho = (self.c * self.gamma ** -self.rho_update_cnt.double() * self.rho_init).clamp_min(self.rho_min)
        self.rho.copy_(torch.where(decay, rho, self.rho))
        self.rho_update_cnt.add_(decay.long())
        self.it.add_(1)
        return t < 0
