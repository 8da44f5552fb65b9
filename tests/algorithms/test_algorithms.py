"""The losses of one step. FixMatch's against the official code (fixmatch.py), then FlexMatch, FreeMatch
and SoftMatch against their authors' reference code, restated here line by
line from USB (microsoft/Semi-supervised-learning at commit 1ef4cbebcc0b368158315aeb425053858cf6c845;
each restated line cites file:line there) and driven with the same logits, step after step: the
masks/weights, the losses, their gradients and the algorithms' state must agree at every step.

The restatements keep the reference's own control flow (Counter over a Python list, boolean-index
assignment, `if mask.sum() > 0`, `.item()`); ours has none of it (no host reads), so these tests are
what says the rewrite computes the same thing."""

from __future__ import annotations

from collections import Counter
from copy import deepcopy

import pytest
import torch
import torch.nn.functional as F

from fixmatch.algorithms.adamatch import AdaMatch
from fixmatch.algorithms.dash import Dash
from fixmatch.algorithms.fixmatch import FixMatch
from fixmatch.algorithms.flexmatch import FlexMatch
from fixmatch.algorithms.freematch import FreeMatch
from fixmatch.algorithms.softmatch import SoftMatch

torch.set_num_threads(1)  # tiny tensors: more threads only spin on a shared machine


# ---------------------------------------------------------------- the reference, restated
def ce_loss(logits, targets, reduction="none"):
    """semilearn/core/criterions/cross_entropy.py:11-31 (hard targets branch, :30-31)."""
    log_pred = F.log_softmax(logits, dim=-1)
    return F.nll_loss(log_pred, targets, reduction=reduction)


def ce_loss_any(logits, targets, reduction="none"):
    """semilearn/core/criterions/cross_entropy.py:11-31, both branches: soft targets :21-28."""
    if logits.shape == targets.shape:
        log_pred = F.log_softmax(logits, dim=-1)
        nll_loss = torch.sum(-targets * log_pred, dim=1)
        return nll_loss if reduction == "none" else nll_loss.mean()
    return ce_loss(logits, targets, reduction)


def consistency_loss(logits, targets, mask):
    """semilearn/core/criterions/consistency.py:14-40, name='ce': ce_loss(none) * mask, mean."""
    loss = ce_loss_any(logits, targets, reduction="none")
    loss = loss * mask
    return loss.mean()


class RefFlexMatch:
    """semilearn/algorithms/flexmatch/utils.py (FlexMatchThresholdingHook) and flexmatch.py:59-109."""

    def __init__(self, ulb_dest_len, num_classes, p_cutoff=0.95, thresh_warmup=True, lambda_u=1.0):
        self.ulb_dest_len, self.num_classes, self.thresh_warmup = ulb_dest_len, num_classes, thresh_warmup
        self.p_cutoff, self.lambda_u = p_cutoff, lambda_u
        self.selected_label = torch.ones((ulb_dest_len,), dtype=torch.long) * -1  # utils.py:20
        self.classwise_acc = torch.zeros((num_classes,))  # utils.py:21

    @torch.no_grad()
    def update(self):  # utils.py:24-35
        pseudo_counter = Counter(self.selected_label.tolist())
        if max(pseudo_counter.values()) < self.ulb_dest_len:
            if self.thresh_warmup:
                for i in range(self.num_classes):
                    self.classwise_acc[i] = pseudo_counter[i] / max(pseudo_counter.values())
            else:
                wo_negative_one = deepcopy(pseudo_counter)
                if -1 in wo_negative_one.keys():
                    wo_negative_one.pop(-1)
                for i in range(self.num_classes):
                    self.classwise_acc[i] = pseudo_counter[i] / max(wo_negative_one.values())

    @torch.no_grad()
    def masking(self, probs_x_ulb, idx_ulb):  # utils.py:38-63, softmax_x_ulb=False (flexmatch.py:95)
        max_probs, max_idx = torch.max(probs_x_ulb, dim=-1)
        beta = self.classwise_acc[max_idx]
        mask = max_probs.ge(self.p_cutoff * (beta / (2.0 - beta)))  # utils.py:53, convex
        select = max_probs.ge(self.p_cutoff)  # utils.py:55
        mask = mask.to(max_probs.dtype)
        if idx_ulb[select == 1].nelement() != 0:  # utils.py:59-60
            self.selected_label[idx_ulb[select == 1]] = max_idx[select == 1]
        self.update()  # utils.py:61
        return mask

    def train_step(self, logits_x_lb, y_lb, logits_x_ulb_w, logits_x_ulb_s, idx_ulb):  # flexmatch.py:84-109
        sup_loss = ce_loss(logits_x_lb, y_lb, reduction="mean")
        probs_x_ulb_w = torch.softmax(logits_x_ulb_w.detach(), dim=-1)  # :87 (compute_prob)
        mask = self.masking(probs_x_ulb_w, idx_ulb)  # :95
        pseudo_label = torch.argmax(probs_x_ulb_w.detach(), dim=-1)  # :98-102 -> pseudo_label.py:37-43
        unsup_loss = consistency_loss(logits_x_ulb_s, pseudo_label, mask)  # :104-107
        return sup_loss + self.lambda_u * unsup_loss, mask


def replace_inf_to_zero(val):  # freematch/freematch.py:12-14
    val[val == float("inf")] = 0.0
    return val


def entropy_loss(mask, logits_s, prob_model, label_hist):  # freematch/freematch.py:16-44
    mask = mask.bool()
    logits_s = logits_s[mask]
    prob_s = logits_s.softmax(dim=-1)
    _, pred_label_s = torch.max(prob_s, dim=-1)
    hist_s = torch.bincount(pred_label_s, minlength=logits_s.shape[1]).to(logits_s.dtype)
    hist_s = hist_s / hist_s.sum()
    prob_model = prob_model.reshape(1, -1)
    label_hist = label_hist.reshape(1, -1)
    prob_model_scaler = replace_inf_to_zero(1 / label_hist).detach()
    mod_prob_model = prob_model * prob_model_scaler
    mod_prob_model = mod_prob_model / mod_prob_model.sum(dim=-1, keepdim=True)
    mean_prob_scaler_s = replace_inf_to_zero(1 / hist_s).detach()
    mod_mean_prob_s = prob_s.mean(dim=0, keepdim=True) * mean_prob_scaler_s
    mod_mean_prob_s = mod_mean_prob_s / mod_mean_prob_s.sum(dim=-1, keepdim=True)
    loss = mod_prob_model * torch.log(mod_mean_prob_s + 1e-12)
    loss = loss.sum(dim=1)
    return loss.mean(), hist_s.mean()


class RefFreeMatch:
    """semilearn/algorithms/freematch/utils.py (FreeMatchThresholingHook) and freematch.py:94-118."""

    def __init__(
        self, num_classes, momentum=0.999, lambda_u=1.0, lambda_e=0.001, clip_thresh=False, use_quantile=False
    ):
        self.m, self.lambda_u, self.lambda_e, self.clip_thresh = momentum, lambda_u, lambda_e, clip_thresh
        self.use_quantile = use_quantile  # False in the USB configs (config/classic_cv/freematch/*.yaml)
        self.p_model = torch.ones((num_classes)) / num_classes  # utils.py:19-21
        self.label_hist = torch.ones((num_classes)) / num_classes
        self.time_p = self.p_model.mean()

    @torch.no_grad()
    def update(self, probs_x_ulb):  # utils.py:24-39
        max_probs, max_idx = torch.max(probs_x_ulb, dim=-1, keepdim=True)
        if self.use_quantile:
            self.time_p = self.time_p * self.m + (1 - self.m) * torch.quantile(max_probs, 0.8)
        else:
            self.time_p = self.time_p * self.m + (1 - self.m) * max_probs.mean()
        if self.clip_thresh:
            self.time_p = torch.clip(self.time_p, 0.0, 0.95)
        self.p_model = self.p_model * self.m + (1 - self.m) * probs_x_ulb.mean(dim=0)
        hist = torch.bincount(max_idx.reshape(-1), minlength=self.p_model.shape[0]).to(self.p_model.dtype)
        self.label_hist = self.label_hist * self.m + (1 - self.m) * (hist / hist.sum())

    @torch.no_grad()
    def masking(self, logits_x_ulb):  # utils.py:47-66
        probs_x_ulb = torch.softmax(logits_x_ulb.detach(), dim=-1)
        self.update(probs_x_ulb)
        max_probs, max_idx = probs_x_ulb.max(dim=-1)
        mod = self.p_model / torch.max(self.p_model, dim=-1)[0]
        mask = max_probs.ge(self.time_p * mod[max_idx]).to(max_probs.dtype)
        return mask

    def train_step(self, logits_x_lb, y_lb, logits_x_ulb_w, logits_x_ulb_s):  # freematch.py:94-118
        sup_loss = ce_loss(logits_x_lb, y_lb, reduction="mean")
        mask = self.masking(logits_x_ulb_w)
        pseudo_label = torch.argmax(logits_x_ulb_w.detach(), dim=-1)  # :101-104, hard label from logits
        unsup_loss = consistency_loss(logits_x_ulb_s, pseudo_label, mask)
        if mask.sum() > 0:  # :113-116
            ent_loss, _ = entropy_loss(mask, logits_x_ulb_s, self.p_model, self.label_hist)
        else:
            ent_loss = 0.0
        return sup_loss + self.lambda_u * unsup_loss + self.lambda_e * ent_loss, mask


class RefSoftMatch:
    """semilearn/algorithms/softmatch/softmatch.py:38-53 and :81-106, its DistAlignEMAHook (hooks/dist_align.py,
    RefDistAlignEMA below) and SoftMatchWeightingHook (softmatch/utils.py:12-77). One line cannot run
    as written: utils.py:28 reads `self.args.num_classes`, and a hook has no `args` (AttributeError
    whenever per_class=True); restated with the num_classes the hook was given."""

    def __init__(self, num_classes, momentum=0.999, n_sigma=2, lambda_u=1.0, dist_uniform=True, per_class=False):
        self.m, self.n_sigma, self.lambda_u, self.per_class = momentum, n_sigma, lambda_u, per_class
        self.num_classes = num_classes
        # softmatch.py:50: p_target_type='uniform' if dist_uniform else 'model'
        self.dist = RefDistAlignEMA(num_classes, momentum, "uniform" if dist_uniform else "model")
        if not self.per_class:  # utils.py:24-29
            self.prob_max_mu_t = torch.tensor(1.0 / num_classes)
            self.prob_max_var_t = torch.tensor(1.0)
        else:
            self.prob_max_mu_t = torch.ones((num_classes)) / num_classes  # :28, `self.args.num_classes`
            self.prob_max_var_t = torch.ones((num_classes))

    @torch.no_grad()
    def update(self, probs_x_ulb):  # utils.py:32-51, world_size 1 (:33-34 not reached)
        max_probs, max_idx = probs_x_ulb.max(dim=-1)
        if not self.per_class:
            prob_max_mu_t = torch.mean(max_probs)
            prob_max_var_t = torch.var(max_probs, unbiased=True)
            self.prob_max_mu_t = self.m * self.prob_max_mu_t + (1 - self.m) * prob_max_mu_t.item()
            self.prob_max_var_t = self.m * self.prob_max_var_t + (1 - self.m) * prob_max_var_t.item()
        else:
            prob_max_mu_t = torch.zeros_like(self.prob_max_mu_t)
            prob_max_var_t = torch.ones_like(self.prob_max_var_t)
            for i in range(self.num_classes):
                prob = max_probs[max_idx == i]
                if len(prob) > 1:
                    prob_max_mu_t[i] = torch.mean(prob)
                    prob_max_var_t[i] = torch.var(prob, unbiased=True)
            self.prob_max_mu_t = self.m * self.prob_max_mu_t + (1 - self.m) * prob_max_mu_t
            self.prob_max_var_t = self.m * self.prob_max_var_t + (1 - self.m) * prob_max_var_t

    @torch.no_grad()
    def masking(self, probs_x_ulb):  # utils.py:53-77, softmax_x_ulb=False
        self.update(probs_x_ulb)
        max_probs, max_idx = probs_x_ulb.max(dim=-1)
        if not self.per_class:
            mu = self.prob_max_mu_t
            var = self.prob_max_var_t
        else:
            mu = self.prob_max_mu_t[max_idx]
            var = self.prob_max_var_t[max_idx]
        return torch.exp(-((torch.clamp(max_probs - mu, max=0.0) ** 2) / (2 * var / (self.n_sigma**2))))

    def train_step(self, logits_x_lb, y_lb, logits_x_ulb_w, logits_x_ulb_s):  # softmatch.py:81-106
        sup_loss = ce_loss(logits_x_lb, y_lb, reduction="mean")
        probs_x_lb = torch.softmax(logits_x_lb.detach(), dim=-1)  # :83-84
        probs_x_ulb_w = torch.softmax(logits_x_ulb_w.detach(), dim=-1)
        probs_x_ulb_w = self.dist.dist_align(probs_x_ulb_w, probs_x_lb)  # :87
        mask = self.masking(probs_x_ulb_w)  # :90
        pseudo_label = torch.argmax(logits_x_ulb_w.detach(), dim=-1)  # :93-98: from the logits, not aligned
        unsup_loss = consistency_loss(logits_x_ulb_s, pseudo_label, mask)
        return sup_loss + self.lambda_u * unsup_loss, mask


class RefDistAlignEMA:
    """semilearn/algorithms/hooks/dist_align.py:10-72 (DistAlignEMAHook), world_size 1."""

    def __init__(self, num_classes, momentum=0.999, p_target_type="uniform"):
        self.m = momentum
        self.update_p_target = p_target_type == "model"  # :57-72: uniform start either way
        self.p_target = torch.ones((num_classes,)) / num_classes
        self.p_model = None  # :23

    @torch.no_grad()
    def dist_align(self, probs_x_ulb, probs_x_lb=None):  # :26-33
        self.update_p(probs_x_ulb, probs_x_lb)
        probs_x_ulb_aligned = probs_x_ulb * (self.p_target + 1e-6) / (self.p_model + 1e-6)
        return probs_x_ulb_aligned / probs_x_ulb_aligned.sum(dim=-1, keepdim=True)

    @torch.no_grad()
    def update_p(self, probs_x_ulb, probs_x_lb):  # :37-55
        probs_x_ulb = probs_x_ulb.detach()
        if self.p_model is None:
            self.p_model = torch.mean(probs_x_ulb, dim=0)
        else:
            self.p_model = self.p_model * self.m + torch.mean(probs_x_ulb, dim=0) * (1 - self.m)
        if self.update_p_target:
            self.p_target = self.p_target * self.m + torch.mean(probs_x_lb, dim=0) * (1 - self.m)


class RefAdaMatch:
    """semilearn/algorithms/adamatch/adamatch.py:41-109 and its AdaMatchThresholdingHook (utils.py:13-33)."""

    def __init__(self, num_classes, p_cutoff=0.95, ema_p=0.999, hard_label=True, lambda_u=1.0):
        self.p_cutoff, self.use_hard_label, self.lambda_u = p_cutoff, hard_label, lambda_u
        self.dist = RefDistAlignEMA(num_classes, momentum=ema_p, p_target_type="model")  # :50-52

    @torch.no_grad()
    def masking(self, probs_x_lb, probs_x_ulb):  # utils.py:29-33 (softmax_x_lb/ulb=False, adamatch.py:94)
        max_probs, _ = probs_x_lb.max(dim=-1)
        p_cutoff = max_probs.mean() * self.p_cutoff
        max_probs, _ = probs_x_ulb.max(dim=-1)
        return max_probs.ge(p_cutoff).to(max_probs.dtype)

    def train_step(self, logits_x_lb, y_lb, logits_x_ulb_w, logits_x_ulb_s):  # adamatch.py:83-109
        sup_loss = ce_loss(logits_x_lb, y_lb, reduction="mean")
        probs_x_lb = torch.softmax(logits_x_lb.detach(), dim=-1)  # :87-88 (compute_prob)
        probs_x_ulb_w = torch.softmax(logits_x_ulb_w.detach(), dim=-1)
        probs_x_ulb_w = self.dist.dist_align(probs_x_ulb_w, probs_x_lb)  # :91
        mask = self.masking(probs_x_lb, probs_x_ulb_w)  # :94
        # :97-101 -> hooks/pseudo_label.py:37-52 with softmax=False: the aligned probs, T unused
        pseudo_label = torch.argmax(probs_x_ulb_w, dim=-1) if self.use_hard_label else probs_x_ulb_w.detach()
        unsup_loss = consistency_loss(logits_x_ulb_s, pseudo_label, mask)  # :104-107
        return sup_loss + self.lambda_u * unsup_loss, mask


class RefDash:
    """semilearn/algorithms/dash/dash.py:48-53, :157-204 and DashThresholdingHook (utils.py:14-51).
    The one change: the warm-up (dash.py:60-154, supervised steps, then rho_init = the evaluation
    set's loss and `it` reset to 0) is here `warmup` steps of the labeled loss alone inside the run,
    rho_init the labeled loss of the first step after them (ours; docs/ssl-algorithms.md)."""

    def __init__(self, warmup, num_iter_per_epoch, T=0.5, gamma=1.27, C=1.0001, rho_min=0.05, lambda_u=1.0):
        self.warmup, self.num_iter_per_epoch, self.T, self.lambda_u = warmup, num_iter_per_epoch, T, lambda_u
        self.gamma, self.C, self.rho_min = gamma, C, rho_min  # utils.py:14-21
        self.rho_update_cnt, self.rho_init, self.rho = 0, None, None
        self.use_hard_label = False  # dash.py:52
        self.step = 0

    @torch.no_grad()
    def update(self, it):  # utils.py:23-38
        if it % (10 * self.num_iter_per_epoch) == 0:
            self.rho = self.C * (self.gamma**-self.rho_update_cnt) * self.rho_init
            self.rho = max(self.rho, self.rho_min)
            self.rho_update_cnt += 1
        self.use_hard_label = self.rho == self.rho_min

    @torch.no_grad()
    def masking(self, logits_x_ulb, it):  # utils.py:40-51
        self.update(it)
        if self.use_hard_label:
            pseudo_label = torch.argmax(logits_x_ulb, dim=-1).detach()
        else:
            pseudo_label = torch.softmax(logits_x_ulb.detach() / self.T, dim=-1)
        loss_w = ce_loss_any(logits_x_ulb, pseudo_label, reduction="none")
        return loss_w.le(self.rho).to(logits_x_ulb.dtype)

    def train_step(self, logits_x_lb, y_lb, logits_x_ulb_w, logits_x_ulb_s):  # dash.py:182-197
        sup_loss = ce_loss(logits_x_lb, y_lb, reduction="mean")
        it, self.step = self.step - self.warmup, self.step + 1
        if it < 0:  # dash.py:117-123: the labeled loss alone
            return sup_loss, torch.zeros(logits_x_ulb_w.shape[0])
        if it == 0:
            self.rho_init = sup_loss.item()  # ours, where dash.py:146-147 evaluates
        mask = self.masking(logits_x_ulb_w, it)  # :184
        # :187-190 -> hooks/pseudo_label.py:37-48 (softmax=True: softmax(logits / T))
        if self.use_hard_label:
            pseudo_label = torch.argmax(logits_x_ulb_w.detach(), dim=-1)
        else:
            pseudo_label = torch.softmax(logits_x_ulb_w.detach() / self.T, dim=-1)
        unsup_loss = consistency_loss(logits_x_ulb_s, pseudo_label, mask)  # :192-195
        return sup_loss + self.lambda_u * unsup_loss, mask


# ---------------------------------------------------------------- the same inputs, many steps
C, B, U, POOL, STEPS, FLAT = 6, 4, 24, 40, 300, 5


def step_inputs(gen: torch.Generator, step: int, skew: float = 0.0):
    """Logits that sharpen as `step` grows (confidences sweep across every threshold), classes
    skewed by `skew` (unequal class counts), the strong view a noisy copy, indices with repeats;
    the last FLAT steps nearly uniform (no confidence reaches a learned threshold)."""
    scale = 0.5 + 8.0 * step / STEPS if step < STEPS - FLAT else 0.01
    bias = skew * torch.arange(C, dtype=torch.float32)
    logits_x = torch.randn(B, C, generator=gen) * 2
    y_x = torch.randint(0, C, (B,), generator=gen)
    weak = torch.randn(U, C, generator=gen) * scale + bias
    strong = weak + torch.randn(U, C, generator=gen)
    idx = torch.randint(0, POOL, (U,), generator=gen)  # repeats inside a batch, as a small pool's passes
    return logits_x, y_x, weak, strong.requires_grad_(), idx


def run_both(ours, ref, with_idx: bool, skew=0.0, seed=0):
    """Both on the same inputs for STEPS steps; yields (ours, ref) of loss, mask, grad per step."""
    gen = torch.Generator().manual_seed(seed)
    for step in range(STEPS):
        logits_x, y_x, weak, strong, idx = step_inputs(gen, step, skew)
        strong_ref = strong.detach().clone().requires_grad_()
        kw = {"idx_u": idx} if with_idx else {}
        loss, stats = ours(logits_x, y_x, weak, strong, **kw)
        ref_loss, ref_mask = ref.train_step(logits_x, y_x, weak, strong_ref, *([idx] if with_idx else []))
        loss.backward()
        if ref_loss.requires_grad:  # Dash's warm-up: the labeled loss alone, no graph to the strong view
            ref_loss.backward()
        yield step, (loss, stats["mask"], strong.grad), (ref_loss, ref_mask, strong_ref.grad)


@pytest.mark.parametrize("warmup", [True, False])
def test_flexmatch_equals_the_reference_step_by_step(warmup):
    ours = FlexMatch(C, POOL, threshold=0.95, lambda_u=1.0, warmup=warmup)
    ref = RefFlexMatch(POOL, C, p_cutoff=0.95, thresh_warmup=warmup)
    partial = 0
    for step, (loss, mask, grad), (r_loss, r_mask, r_grad) in run_both(ours, ref, with_idx=True, skew=0.3):
        # same float32 operations in the same order: bit-identical
        assert torch.equal(mask, r_mask), step
        assert torch.equal(loss, r_loss) and torch.equal(grad, r_grad), step
        assert torch.equal(ours.selected_label, ref.selected_label), step
        assert torch.equal(ours.classwise_acc, ref.classwise_acc), step
        partial += bool(0 < mask.mean() < 1)
    # the run went through every regime: thresholds that split batches, most images selected once
    assert partial > 20 and (ours.selected_label >= 0).float().mean() > 0.9
    assert 0 < ours.classwise_acc.min() < ours.classwise_acc.max() <= 1


def test_flexmatch_keeps_its_learning_effects_when_every_image_holds_one_class():
    """utils.py:26: no update while every image holds the same value (all -1, or all one class)."""
    ours, ref = FlexMatch(3, 4, threshold=0.5), RefFlexMatch(4, 3, p_cutoff=0.5)
    sure = lambda *classes: F.one_hot(torch.tensor(classes), 3).float() * 20  # noqa: E731
    steps = ((sure(0, 1), torch.tensor([0, 1])), (sure(1, 1, 1, 1), torch.tensor([0, 1, 2, 3])))
    for weak, idx in steps:
        ours(torch.zeros(1, 3), torch.tensor([0]), weak, weak, idx_u=idx)
        ref.train_step(torch.zeros(1, 3), torch.tensor([0]), weak, weak, idx)
        assert torch.equal(ours.classwise_acc, ref.classwise_acc)
    assert ours.selected_label.tolist() == [1, 1, 1, 1]
    assert ours.classwise_acc.tolist() == [0.5, 0.5, 0.0]  # from step 1 (2 unused, one 0, one 1), not [0, 1, 0]


@pytest.mark.parametrize("use_quantile", [False, True])
def test_freematch_equals_the_reference_step_by_step(use_quantile):
    # a visible fairness term, and EMAs that follow the sharpening logits within the run
    ours = FreeMatch(C, lambda_e=0.5, ema_p=0.9, use_quantile=use_quantile)
    ref = RefFreeMatch(C, momentum=0.9, lambda_e=0.5, use_quantile=use_quantile)
    none_in = partial = 0
    for step, (loss, mask, grad), (r_loss, r_mask, r_grad) in run_both(ours, ref, with_idx=False, skew=0.3):
        assert torch.equal(mask, r_mask), step
        for name in ("p_model", "label_hist", "time_p"):
            assert torch.equal(getattr(ours, name), getattr(ref, name)), (step, name)
        # the fairness loss sums the masked-in images in another order than the reference's
        # selection: float32 rounding of sums of at most U terms
        tol = dict(rtol=U * 2**-23, atol=U * 2**-23)
        torch.testing.assert_close(loss, r_loss, **tol, msg=f"step {step}")
        torch.testing.assert_close(grad, r_grad, **tol, msg=f"step {step}")
        none_in += bool(mask.sum() == 0)
        partial += bool(0 < mask.mean() < 1)
    assert none_in > 0 and partial > 20  # both branches of the reference's `if mask.sum() > 0`


def test_freematch_clips_the_global_threshold_as_the_svhn_configs():
    """freematch/utils.py:34-35: time_p clipped to [0, 0.95] when clip_thresh (USB's SVHN configs)."""
    gen = torch.Generator().manual_seed(2)
    ours = FreeMatch(C, clip_thresh=True, ema_p=0.5)
    ref, unclipped = RefFreeMatch(C, momentum=0.5, clip_thresh=True), RefFreeMatch(C, momentum=0.5)
    for step in range(12):
        weak = torch.randn(U, C, generator=gen) * (1 + 4 * step)  # confidences -> 1
        ours(torch.zeros(1, C), torch.tensor([0]), weak, weak)
        ref.masking(weak)
        unclipped.masking(weak)
        assert torch.equal(ours.time_p, ref.time_p), step
    assert float(ours.time_p) == pytest.approx(0.95) and float(unclipped.time_p) > 0.96


def test_softmatch_equals_the_reference_step_by_step():
    ours, ref = SoftMatch(C, lambda_u=1.0, ema_p=0.99, n_sigma=2.0), RefSoftMatch(C, momentum=0.99, n_sigma=2)
    weighted = 0
    for step, (loss, weight, grad), (r_loss, r_weight, r_grad) in run_both(ours, ref, with_idx=False, skew=0.5):
        assert torch.equal(weight, r_weight), step
        assert torch.equal(loss, r_loss) and torch.equal(grad, r_grad), step
        assert torch.equal(ours.p_model, ref.dist.p_model), step
        assert torch.equal(ours.p_target, ref.dist.p_target), step
        assert torch.equal(ours.prob_max_mu_t, ref.prob_max_mu_t), step
        assert torch.equal(ours.prob_max_var_t, ref.prob_max_var_t), step
        weighted += bool(weight.min() < 0.5)
    assert weighted > 20  # the Gaussian side of the weights was exercised, not only the flat top


def test_softmatch_aligned_to_the_labeled_predictions_equals_the_reference():
    """dist_uniform=False: USB's p_target_type='model', an EMA of the labeled batch's probabilities."""
    ours = SoftMatch(C, ema_p=0.9, dist_uniform=False)
    ref = RefSoftMatch(C, momentum=0.9, dist_uniform=False)
    for step, (loss, weight, grad), (r_loss, r_weight, r_grad) in run_both(ours, ref, with_idx=False, skew=0.5):
        assert torch.equal(weight, r_weight) and torch.equal(loss, r_loss) and torch.equal(grad, r_grad), step
        assert torch.equal(ours.p_target, ref.dist.p_target), step
    assert not torch.allclose(ours.p_target, torch.full((C,), 1 / C))  # the target moved


def test_softmatch_per_class_gaussians_equal_the_reference():
    """per_class=True: one mean and variance per pseudo-label class, from per-class sums on the device
    where the reference loops over boolean selections: the same up to float32 summation order."""
    ours, ref = SoftMatch(C, ema_p=0.9, per_class=True), RefSoftMatch(C, momentum=0.9, per_class=True)
    tol = dict(rtol=U * 2**-23, atol=U * 2**-23)
    weighted = 0
    for step, (loss, weight, grad), (r_loss, r_weight, r_grad) in run_both(ours, ref, with_idx=False, skew=0.5):
        assert ours.prob_max_mu_t.shape == (C,), step
        for a, b in ((weight, r_weight), (loss, r_loss), (grad, r_grad)):
            torch.testing.assert_close(a, b, **tol, msg=f"step {step}")
        torch.testing.assert_close(ours.prob_max_mu_t, ref.prob_max_mu_t, **tol, msg=f"step {step}")
        torch.testing.assert_close(ours.prob_max_var_t, ref.prob_max_var_t, **tol, msg=f"step {step}")
        weighted += bool(weight.min() < 0.5)
    assert weighted > 20
    # classes of one image or none kept (0, 1) in the EMA: the means moved apart per class
    assert ours.prob_max_mu_t.max() - ours.prob_max_mu_t.min() > 0.05


@pytest.mark.parametrize("hard_label", [True, False])
def test_adamatch_equals_the_reference_step_by_step(hard_label):
    ours = AdaMatch(C, threshold=0.95, ema_p=0.9, hard_label=hard_label)
    ref = RefAdaMatch(C, p_cutoff=0.95, ema_p=0.9, hard_label=hard_label)
    partial = 0
    for step, (loss, mask, grad), (r_loss, r_mask, r_grad) in run_both(ours, ref, with_idx=False, skew=0.5):
        assert torch.equal(mask, r_mask), step
        assert torch.equal(ours.p_model, ref.dist.p_model), step
        assert torch.equal(ours.p_target, ref.dist.p_target), step
        # soft targets too: F.cross_entropy computes the reference's sum(-t * log p) in the same order
        assert torch.equal(loss, r_loss) and torch.equal(grad, r_grad), step
        partial += bool(0 < mask.mean() < 1)
    assert partial > 20  # the relative threshold split batches, not only all-in or all-out
    assert not torch.allclose(ours.p_target, torch.full((C,), 1 / C))  # the target followed the labeled batches


def test_dash_equals_the_reference_step_by_step():
    warmup, every = 7, 10
    ours = Dash(lambda_u=1.0, warmup_steps=warmup, decay_every=every)
    ref = RefDash(warmup, num_iter_per_epoch=1)  # rho every 10 epochs of 1 step
    soft = hard = 0
    for step, (loss, mask, grad), (r_loss, r_mask, r_grad) in run_both(ours, ref, with_idx=False, skew=0.3):
        assert torch.equal(mask, r_mask), step
        if step < warmup:
            assert torch.equal(loss, r_loss) and r_grad is None and not grad.any(), step
            continue
        assert float(ours.rho) == ref.rho and float(ours.rho_init) == ref.rho_init, step
        assert int(ours.rho_update_cnt) == ref.rho_update_cnt, step
        assert bool(ours.rho == ours.rho_min) == ref.use_hard_label, step
        # the one-hot target of the hard phase gives nll_loss's value and gradient bit for bit
        assert torch.equal(loss, r_loss) and torch.equal(grad, r_grad), step
        partial = bool(0 < mask.mean() < 1)
        hard += partial and ref.use_hard_label
        soft += partial and not ref.use_hard_label
    assert int(ours.it) == STEPS
    assert soft > 10 and hard > 10  # the loss threshold split batches with soft and with hard labels


def test_dash_masks_in_a_loss_equal_to_rho():
    """utils.py:50: loss_w.le(rho), inclusive. rho_min set to the labeled loss makes rho = rho_min (hard
    labels) and an unlabeled image identical to the labeled one has exactly that loss."""
    row, y = torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([0])
    loss = F.cross_entropy(row, y)
    dash = Dash(warmup_steps=0, c=1.0, rho_min=float(loss))
    weak = torch.cat([row, row + torch.tensor([[0.0, 0.3, 0.0]])])  # the second less sure: above rho
    _, stats = dash(row, y, weak, weak.clone(), idx_u=torch.arange(2))
    assert float(dash.rho) == dash.rho_min  # the hard phase
    assert stats["mask"].tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: AdaMatch(C, ema_p=0.9),
        lambda: Dash(warmup_steps=20, decay_every=7),
        lambda: FlexMatch(C, POOL, threshold=0.9),
        lambda: FreeMatch(C, lambda_e=0.5),
        lambda: SoftMatch(C, ema_p=0.9),
        lambda: SoftMatch(C, ema_p=0.9, dist_uniform=False, per_class=True),
    ],
    ids=["adamatch", "dash", "flexmatch", "freematch", "softmatch", "softmatch_model_per_class"],
)
def test_state_round_trips_and_continues_exactly(make):
    """A state_dict taken mid-run and loaded into a fresh instance continues the same steps bit for bit."""
    a = make()
    gen = torch.Generator().manual_seed(1)
    inputs = [step_inputs(gen, s) for s in range(STEPS)]
    for lx, yx, w, s, i in inputs[:150]:
        a(lx, yx, w, s, idx_u=i)
    b = make()
    b.load_state_dict(a.state_dict())
    for lx, yx, w, s, i in inputs[150:]:
        la, sa = a(lx, yx, w, s, idx_u=i)
        lb, sb = b(lx, yx, w, s, idx_u=i)
        assert torch.equal(la, lb) and torch.equal(sa["mask"], sb["mask"])
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


# ---------------------------------------------------------------- FixMatch's loss (official fixmatch.py)
def test_pseudo_labels_come_from_the_weak_view_and_train_the_strong_view():
    weak = torch.tensor([[8.0, 0.0, 0.0], [0.0, 0.0, 9.0]])  # confident: classes 0 and 2
    strong = torch.tensor([[0.0, 3.0, 0.0], [1.0, 0.0, 0.0]])  # would say 1 and 0
    loss, stats = FixMatch(0.95, 1.0)(torch.zeros(1, 3), torch.tensor([1]), weak, strong)
    l_s = F.cross_entropy(torch.zeros(1, 3), torch.tensor([1]))
    l_u = F.cross_entropy(strong, torch.tensor([0, 2]))
    torch.testing.assert_close(loss, l_s + l_u)
    assert stats["pseudo_labels"].tolist() == [0, 2] and stats["mask"].tolist() == [1.0, 1.0]


def test_threshold_is_inclusive_and_configurable():
    weak = torch.tensor([[2.0, 0.0], [0.5, 0.0]])
    confidence = weak.softmax(-1).max(-1).values
    _, at = FixMatch(threshold=float(confidence[0]))(torch.zeros(1, 2), torch.tensor([0]), weak, weak)
    assert at["mask"].tolist() == [1.0, 0.0]  # exactly at the threshold counts (>=)
    _, above = FixMatch(threshold=float(confidence[0]) + 1e-6)(torch.zeros(1, 2), torch.tensor([0]), weak, weak)
    assert above["mask"].tolist() == [0.0, 0.0]


def test_unlabeled_loss_is_a_mean_over_all_images_scaled_by_lambda():
    weak = torch.tensor([[9.0, 0.0], [0.0, 0.1], [0.0, 0.2], [0.1, 0.0]])  # only the first is confident
    strong = torch.tensor([[0.0, 2.0], [1.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    x, y = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    loss, stats = FixMatch(0.95, lambda_u=3.0)(x, y, weak, strong)
    l_u = F.cross_entropy(strong[:1], torch.tensor([0])) / 4  # masked images count as zeros in the mean
    torch.testing.assert_close(stats["loss_u"], l_u)
    torch.testing.assert_close(loss, F.cross_entropy(x, y) + 3.0 * l_u)
    assert stats["mask_rate"] == 0.25


def test_gradient_reaches_only_the_strong_view():
    weak = torch.tensor([[6.0, 0.0, 0.0], [0.0, 5.0, 0.0]], requires_grad=True)
    strong = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]], requires_grad=True)
    loss, _ = FixMatch(0.95, 2.0)(torch.zeros(1, 3), torch.tensor([2]), weak, strong)
    loss.backward()
    assert weak.grad is None or torch.count_nonzero(weak.grad) == 0
    expected = 2.0 * (strong.detach().softmax(-1) - F.one_hot(torch.tensor([0, 1]), 3)) / 2
    torch.testing.assert_close(strong.grad, expected)
