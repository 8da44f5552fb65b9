"""Fidelity to the official FixMatch code (google-research/fixmatch), checked from outside the code:
the network against an independent re-statement of the official `residual()` network, the label
splits against `scripts/create_split.py`'s algorithm, the loss, and the wiring of a whole training
step (which view feeds what, the pools, EMA, evaluation, schedule, optimizer)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from tiny_runs import tiny_config, tiny_trainer

from fixmatch.algorithms import FixMatch
from fixmatch.config import TrainConfig, resolve
from fixmatch.data import load_dataset
from fixmatch.data.splits import official_labeled_indices
from fixmatch.models import MODELS, build_model, count_parameters, register
from fixmatch.training.train import make_trainer, pick_labels

LEAK = 0.1


# ---------------------------------------------------------------- the network
def tf_same_conv(x, w, stride):
    """tf.layers.conv2d(padding='same'): out = ceil(in / stride), the padding split with the
    smaller half before (TF's documented rule), no bias."""
    pads = []
    for size, k in zip(x.shape[-2:], w.shape[-2:]):
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return F.conv2d(F.pad(x, (left, right, top, bottom)), w, stride=stride)


def tf_bn(x, bn: nn.BatchNorm2d, training: bool):
    """tf.layers.batch_normalization: epsilon 1e-3 (TF's default), batch statistics in training."""
    if training:
        mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    shape = (1, -1, 1, 1)
    return (x - mean.view(shape)) / torch.sqrt(var.view(shape) + 1e-3) * bn.weight.view(shape) + bn.bias.view(shape)


def official_forward(model, x, training: bool):
    """libml/models.py ResNet.classifier, line by line, reading the weights of our modules."""
    act = lambda t, bn: F.leaky_relu(tf_bn(t, bn, training), LEAK)  # noqa: E731
    y = tf_same_conv(x, model.stem.weight, 1)
    for i, block in enumerate(model.blocks):
        x0 = y
        stride = 2 if block.conv1.stride[0] == 2 else 1
        h = act(x0, block.pre[0])
        if i == 0:  # activate_before_residual only in the very first block
            x0 = h
        h = tf_same_conv(h, block.conv1.weight, stride)
        h = act(h, block.mid[0])
        h = tf_same_conv(h, block.conv2.weight, 1)
        if x0.shape[1] != h.shape[1]:
            x0 = tf_same_conv(x0, block.shortcut.weight, stride)
        y = x0 + h
    y = act(y, model.head_act[0]).mean((2, 3))
    return F.linear(y, model.fc.weight, model.fc.bias)


@pytest.mark.parametrize("name,shape", [("wrn28_2", (3, 32, 32)), ("wrn37_2", (1, 48, 48)), ("wrn10_1", (3, 24, 24))])
def test_wideresnet_computes_the_official_network(name, shape):
    torch.manual_seed(0)
    model = build_model(name, 10, shape[0]).double()
    with torch.no_grad():  # non-trivial BN parameters and running statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, *shape, dtype=torch.float64)
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            torch.testing.assert_close(model(x.clone()), official_forward(model, x, training), rtol=1e-9, atol=1e-9)


def test_batchnorm_settings_are_official():
    for name in ("wrn28_2", "wrn28_8", "wrn37_2", "cnn_small"):
        bns = [m for m in build_model(name, 10, 3).modules() if isinstance(m, nn.BatchNorm2d)]
        assert bns and all(m.eps == 1e-3 and m.momentum == 0.001 for m in bns), name


def test_parameter_counts_and_the_official_conv_biases():
    """Official convs have biases; ours do not (each feeds a BatchNorm): 1,469,642 = ours + one per conv channel."""
    model = build_model("wrn28_2", 10, 3)
    biases = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    assert count_parameters(model) == 1_467_610 and count_parameters(model) + biases == 1_469_642
    assert count_parameters(build_model("wrn28_8", 10, 3)) == 23_354_842


def test_legacy_wiring_is_a_different_network_kept_for_old_files():
    torch.manual_seed(0)
    new, old = build_model("wrn10_1", 7, 1), build_model("wrn10_1", 7, 1, wiring="fixmatch-0.1")
    old.load_state_dict(new.state_dict())
    x = torch.randn(2, 1, 16, 16)
    assert not torch.allclose(new.eval()(x), old.eval()(x), atol=1e-4)


def test_initialisation_follows_the_official_code():
    torch.manual_seed(0)
    model = build_model("wrn28_8", 10, 3)
    conv = model.blocks[5].conv1  # 3x3, 256 -> 256
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 256)), rel=0.02)
    fc = model.fc.weight  # glorot normal, truncated at 2 std: std of the samples = sqrt(2/(fan_in+fan_out))
    assert fc.std().item() == pytest.approx(math.sqrt(2 / (512 + 10)), rel=0.1)
    assert fc.abs().max() <= 2 * math.sqrt(2 / 522) / 0.87962566103423978 + 1e-6


# ---------------------------------------------------------------- the labels
def create_split_reference(labels, size, seed):
    """scripts/create_split.py's loop, with numpy's global generator as the official code uses it."""
    class_id = [list(np.flatnonzero(labels == c)) for c in range(labels.max() + 1)]
    class_id = [np.array(ids, dtype=np.int64) for ids in class_id]
    stats = np.array([len(ids) for ids in class_id], np.float64)
    stats /= stats.max()
    if seed:
        np.random.seed(seed)
        for ids in class_id:
            np.random.shuffle(ids)
    npos, label = np.zeros(len(class_id), np.int64), []
    for _ in range(size):
        c = np.argmax(stats - npos / max(npos.max(), 1))
        label.append(class_id[c][npos[c]])
        npos[c] += 1
    return sorted(int(i) for i in label)


@pytest.mark.parametrize("seed", [0, 1, 3, 5])
def test_splits_are_the_official_create_split(seed):
    rng = np.random.RandomState(123)
    balanced = rng.permutation(np.repeat(np.arange(10), 50))
    skewed = rng.choice(10, 3000, p=np.array([1, 9, 7, 6, 5, 5, 4, 4, 3, 3]) / 47)  # SVHN-like frequencies
    for labels, size in ((balanced, 40), (balanced, 250), (balanced, 37), (skewed, 250), (skewed, 1000)):
        got = official_labeled_indices(labels, size, seed)
        assert got.tolist() == create_split_reference(labels, size, seed), (size, seed)
    if seed == 0:  # no shuffle: the first images of each class in record order
        got = official_labeled_indices(balanced, 40, 0)
        assert got.tolist() == sorted(i for c in range(10) for i in np.flatnonzero(balanced == c)[:4])
    assert np.bincount(balanced[official_labeled_indices(balanced, 250, seed)]).tolist() == [25] * 10
    counts = np.bincount(skewed[official_labeled_indices(skewed, 1000, seed)], minlength=10)
    assert np.abs(counts / 1000 - np.bincount(skewed) / 3000).max() < 0.01  # proportional


def test_fold_selects_the_split_and_seed_does_not():
    data = load_dataset("digits")
    a = pick_labels(resolve(TrainConfig(fold=2, seed=0)), data)
    assert a.tolist() == pick_labels(resolve(TrainConfig(fold=2, seed=9)), data).tolist()
    assert a.tolist() != pick_labels(resolve(TrainConfig(fold=3)), data).tolist()
    assert a.tolist() == create_split_reference(data.y_train.numpy(), 20, 2)


# ---------------------------------------------------------------- the loss
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


# ---------------------------------------------------------------- one training step, from outside
class LinearProbe(nn.Module):
    """BN-free and linear: its logits for any rows of a batch can be recomputed exactly."""

    def __init__(self, num_classes: int, in_channels: int = 3, **_):
        super().__init__()
        self.fc = nn.Linear(in_channels * 64, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


if "linear_probe_test" not in MODELS:
    register("linear_probe_test")(LinearProbe)


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

    def spy(*args):
        seen["args"] = [a.detach().clone() for a in args]
        loss, stats = algorithm(*args)
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
        TrainConfig(
            dataset="digits",
            algorithm="fixmatch",
            model="linear_probe_test",
            batch_size=8,
            mu=3,
            steps=10,
            eval_every=10,
            threshold=0.01,
            device="cpu",
        )
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


def test_paper_defaults_are_the_official_recipe():
    cfg = resolve(TrainConfig(dataset="cifar10"))
    assert (cfg.algorithm, cfg.model, cfg.num_labels, cfg.batch_size, cfg.mu) == ("fixmatch", "wrn28_2", 4000, 64, 7)
    assert (cfg.threshold, cfg.lambda_u, cfg.lr, cfg.momentum, cfg.nesterov) == (0.95, 1.0, 0.03, 0.9, True)
    assert (cfg.weight_decay, cfg.ema_decay, cfg.ema_warmup, cfg.bn_momentum) == (5e-4, 0.999, False, 0.001)
    assert (cfg.steps, cfg.lr_schedule_steps, cfg.eval_every, cfg.median_of) == (2**20, 2**20, 1024, 20)
    assert (cfg.flip, cfg.randaugment, cfg.input_scaling) == (True, "official", "official")
    assert resolve(TrainConfig(dataset="svhn")).flip is False
    c100 = resolve(TrainConfig(dataset="cifar100"))
    assert (c100.model, c100.weight_decay) == ("wrn28_8", 1e-3)


def test_input_scaling_is_official_and_mean_std_is_an_option():
    trainer, data = digits_trainer()
    x = torch.arange(256, dtype=torch.uint8).view(4, 1, 8, 8)
    torch.testing.assert_close(trainer.normalize(x), x.float() / 127.5 - 1.0)
    other, _ = digits_trainer(input_scaling="mean_std")
    mean, std = data.channel_stats()
    torch.testing.assert_close(other.normalize(x), (x.float() / 255 - mean[0]) / std[0])


@pytest.mark.parametrize("dataset,flip", [("cifar10", True), ("svhn", False)])
def test_weak_view_is_a_flip_and_a_uniform_shift(dataset, flip):
    """Pixel (16, 16) of a coordinate-coded 32x32 image tells each output's flip and shift: the flip
    has p=0.5 (only where the dataset flips) and the shift is uniform over -4..4 in each axis."""
    from fixmatch.augment.weak import weak_augment

    n = 4000
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    img = torch.stack([rows, cols, torch.zeros_like(rows)]).to(torch.uint8)
    out = weak_augment(
        img.expand(n, -1, -1, -1).contiguous(),
        flip=resolve(TrainConfig(dataset=dataset)).flip,
        generator=torch.Generator().manual_seed(0),
    )
    dy = out[:, 0, 16, 16].long() - 16
    flipped = out[:, 1, 16, 17] < out[:, 1, 16, 16]
    dx = torch.where(flipped, 15 - out[:, 1, 16, 16].long(), out[:, 1, 16, 16].long() - 16)
    rate = flipped.float().mean().item()
    assert (0.47 < rate < 0.53) if flip else rate == 0
    for d in (dx, dy):
        counts = torch.bincount(d + 4, minlength=9)
        assert len(counts) == 9 and (counts > n / 9 * 0.8).all() and (counts < n / 9 * 1.2).all()


def test_randaugment_rates_are_the_documented_ones(monkeypatch):
    """2 slots per image; each applies one of the 14 ops (uniform) with p=0.5, at a level 1..9."""
    from fixmatch.augment import randaugment as augment

    calls, apply = [], augment._apply

    def recording(x, op, mag, grouped=None):
        calls.append((op.clone(), mag.clone()))
        return apply(x, op, mag, grouped)

    monkeypatch.setattr(augment, "_apply", recording)
    n = 7000
    x = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    augment.strong_augment(x, flip=True, generator=torch.Generator().manual_seed(1))
    assert len(calls) == 2
    identity = augment.OP_NAMES.index("Identity")
    rotate = augment.OP_NAMES.index("Rotate")
    for op, mag in calls:
        share = torch.bincount(op, minlength=14).float() / n
        assert abs(share[identity].item() - (0.5 + 0.5 / 14)) < 0.02
        others = torch.cat([share[:identity], share[identity + 1 :]])
        assert ((others - 0.5 / 14).abs() < 0.01).all()
        levels = (mag[op == rotate] / 3).abs().round().long()  # official Rotate: 3 * level degrees
        assert set(levels.tolist()) == set(range(1, 10))
