"""Fidelity of a whole training step to the official FixMatch code (google-research/fixmatch), checked
from outside the code: which view feeds what, the pools, EMA, evaluation, schedule, optimizer and input
scaling. The network, the label splits, the loss and the views have theirs in test_models.py,
test_data.py, test_algorithms.py and test_augment.py."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from tiny_runs import tiny_config, tiny_trainer

from fixmatch.data import load_dataset
from fixmatch.models import MODELS, register
from fixmatch.training.resolve import resolve
from fixmatch.training.train import make_trainer, pick_labels


class LinearProbe(nn.Module):
    """BN-free and linear: its logits for any rows of a batch can be recomputed exactly."""

    def __init__(self, num_classes: int, in_channels: int = 3, **_):
        super().__init__()
        self.fc = nn.Linear(in_channels * 64, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def linear_probe_test(num_classes: int, in_channels: int = 3, **_) -> nn.Module:
    return LinearProbe(num_classes, in_channels)


if "linear_probe_test" not in MODELS:
    register(linear_probe_test)


def digits_trainer(**kw):
    base = dict(model="linear_probe_test", mu=3, steps=100, eval_every=50, device="cpu", seed=1, lr=0.03)
    return tiny_trainer(tiny_config(**{**base, "weight_decay": 5e-4, **kw}))


def weak_candidates(images: torch.Tensor) -> set[bytes]:
    """Every reflect-padded 1-px shift (no flip: digits) of each 8x8 image."""
    out = set()
    padded = F.pad(images.float(), (1, 1, 1, 1), mode="reflect").to(torch.uint8)
    for img in padded:
        for i in range(3):
            for j in range(3):
                out.add(bytes(img[:, i : i + 8, j : j + 8].contiguous().numpy()))
    return out


def record_step(trainer):
    """One step; returns the model's input as uint8 pixels, the logits the algorithm got, the
    unlabeled indices drawn and the loss."""
    seen = {"model": copy.deepcopy(trainer.model)}  # the weights this step's forward uses
    seen["forwards"] = []

    def record_forward(module, args):
        seen.setdefault("x", args[0].detach().clone())
        seen["forwards"].append(args[0].shape[0])

    hook = trainer.model.register_forward_pre_hook(record_forward)
    draw, algorithm = trainer.unl_sampler.next, trainer.algorithm

    def next_indices(*size):
        seen["ui"] = draw(*size)
        return seen["ui"]

    def spy(*args, **kw):
        seen["args"] = [a.detach().clone() for a in args]
        loss, stats = algorithm(*args, **kw)
        seen["loss"] = loss.detach()
        return loss, stats

    trainer.unl_sampler.next, trainer.algorithm = next_indices, spy
    trainer.step()
    trainer.unl_sampler.next, trainer.algorithm = draw, algorithm
    hook.remove()
    pixels = torch.round((seen["x"] + 1) * 127.5).to(torch.uint8)  # official scaling undone
    return pixels, seen


def test_one_step_feeds_each_view_where_the_official_code_does():
    trainer, data = digits_trainer()
    b, u = 8, 24
    for _ in range(3):
        pixels, seen = record_step(trainer)
        assert seen["forwards"] == [b + 2 * u]  # ONE forward: BatchNorm statistics over all three parts
        lab, weak, strong = pixels[:b], pixels[b : b + u], pixels[b + u :]
        # the labeled batch: weak views (flip/shift) of labeled images only, never strong ones
        sources = [weak_candidates(trainer.x_lab[i : i + 1]) for i in range(len(trainer.x_lab))]
        owner = [
            next(i for i, c in enumerate(sources) if bytes(img.numpy()) in c) for img in lab
        ]  # StopIteration: not a weak view
        # the unlabeled weak view: weak views of the drawn images; the strong view: the same images,
        # RandAugment + Cutout (grey 127, which no digits pixel has)
        for k, i in enumerate(seen["ui"].tolist()):
            assert bytes(weak[k].numpy()) in weak_candidates(data.x_train[i : i + 1])
            assert (strong[k] == 127).sum() >= 4 and 127 not in set(weak[k].unique().tolist())
        # the algorithm got: labeled logits, the weak view's, the strong view's, in that order
        with torch.no_grad():
            logits = seen["model"](trainer.normalize(pixels))
        args = seen["args"]
        assert len(args) == 4
        torch.testing.assert_close(args[0], logits[:b])
        torch.testing.assert_close(args[2], logits[b : b + u])
        torch.testing.assert_close(args[3], logits[b + u :])
        assert args[1].tolist() == trainer.y_lab[owner].tolist()  # each labeled view with its own label


def test_loss_uses_the_configured_threshold_and_lambda():
    trainer, _ = digits_trainer(threshold=0.2, lambda_u=2.5)
    _, seen = record_step(trainer)
    logits_x, y_x, weak, strong = seen["args"]
    conf, pseudo = weak.softmax(-1).max(-1)
    mask = (conf >= 0.2).float()
    assert 0 < mask.mean() < 1  # both kinds present: the threshold decides
    expected = F.cross_entropy(logits_x, y_x) + 2.5 * (F.cross_entropy(strong, pseudo, reduction="none") * mask).mean()
    torch.testing.assert_close(seen["loss"], expected)


def test_unlabeled_pool_is_the_whole_train_split():
    trainer, data = digits_trainer()
    assert torch.equal(trainer.x_unl, data.x_train) and len(trainer.x_lab) == 20
    drawn = torch.cat([trainer.unl_sampler.next() for _ in range(60)])
    assert sorted(set(drawn.tolist())) == list(range(len(data.x_train)))  # every image, each pass


def test_unlabeled_images_without_labels_join_the_pool_and_are_not_scored():
    import dataclasses

    data = load_dataset("digits")
    extra = data.x_train[:50].flip(-1).contiguous()
    data = dataclasses.replace(data, x_unlabeled=extra)
    cfg = resolve(
        tiny_config(model="linear_probe_test", mu=3, steps=10, eval_every=10, threshold=0.01, device="cpu", seed=0)
    )
    trainer = make_trainer(cfg, data, pick_labels(cfg, data), torch.device("cpu"))
    assert len(trainer.x_unl) == len(data.x_train) + 50 and (trainer.y_unl[-50:] == -1).all()
    hidden = torch.ones(len(data.x_train), dtype=torch.bool)
    hidden[torch.as_tensor(pick_labels(cfg, data))] = False  # the labeled images are not scored either
    assert torch.equal(trainer.y_unl[:-50] >= 0, hidden)
    assert torch.equal(trainer.x_unl[-50:], extra)
    drawn = []
    for _ in range(6):
        _, seen = record_step(trainer)
        drawn.append(seen["ui"])
    drawn = torch.cat(drawn)
    known = int(sum(bool(hidden[i]) for i in drawn.tolist() if i < len(data.x_train)))
    assert known < len(drawn)  # some images without (visible) labels were drawn ...
    assert float(trainer.sums["pseudo_count"]) == known  # ... and only the others were scored (tau ~ 0: all confident)


def test_ema_follows_the_official_update_and_copies_batchnorm_buffers():
    trainer, _ = digits_trainer(model="cnn_small", ema_warmup=False, ema_decay=0.999)
    ema = trainer.ema.model
    for _ in range(3):
        before = [p.detach().clone() for p in ema.parameters()]
        trainer.step()
        for old, new, p in zip(before, ema.parameters(), trainer.model.parameters()):
            torch.testing.assert_close(new, 0.999 * old + 0.001 * p.detach(), rtol=1e-5, atol=1e-7)
        for b_ema, b in zip(ema.buffers(), trainer.model.buffers()):
            assert torch.equal(b_ema, b)  # BN running statistics copied live, as the official getter reads them
    assert not torch.equal(before[0], next(ema.parameters()))


def test_evaluation_reports_the_ema_model():
    trainer, data = digits_trainer()
    counts = torch.bincount(data.y_test)
    ema_class, raw_class = int(counts.argmax()), int(counts.argmin())  # 51 and 48 of 500 test images
    with torch.no_grad():
        for model, cls in ((trainer.ema.model, ema_class), (trainer.model, raw_class)):
            model.fc.weight.zero_()
            model.fc.bias.zero_()
            model.fc.bias[cls] = 10.0  # a constant prediction: accuracy = that class's share of the test set
    rec = trainer.record_evaluation(0.0)
    assert rec["accuracy"] == pytest.approx(51 / 500) and float(counts[ema_class]) == 51
    assert rec["raw_accuracy"] == pytest.approx(48 / 500) and float(counts[raw_class]) == 48


def test_learning_rate_follows_the_official_cosine_each_step():
    trainer, _ = digits_trainer(steps=8, lr_schedule_steps=8, lr=0.05)
    seen, step = [], trainer.optimizer.step

    def recording_step(*a, **k):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*a, **k)

    trainer.optimizer.step = recording_step
    for _ in range(8):
        trainer.step()
    assert seen == pytest.approx([0.05 * math.cos(7 * math.pi * k / (16 * 8)) for k in range(8)], rel=1e-12)


def test_optimizer_is_nesterov_sgd_decaying_only_conv_and_linear_weights():
    trainer, _ = digits_trainer(model="cnn_small", weight_decay=5e-4)
    groups = trainer.optimizer.param_groups
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in groups)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert all(g["weight_decay"] in (0.0, 5e-4) for g in groups)
    weights = {id(m.weight) for m in trainer.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert decayed == weights
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in trainer.model.parameters()}


def test_input_scaling_is_official_and_mean_std_is_an_option():
    trainer, data = digits_trainer()
    x = torch.arange(256, dtype=torch.uint8).view(4, 1, 8, 8)
    torch.testing.assert_close(trainer.normalize(x), x.float() / 127.5 - 1.0)
    other, _ = digits_trainer(input_scaling="mean_std")
    mean, std = data.channel_stats()
    torch.testing.assert_close(other.normalize(x), (x.float() / 255 - mean[0]) / std[0])
