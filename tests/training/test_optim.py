"""The optimiser, the learning-rate schedule and the EMA, as the official code has them."""

import math

import pytest
import torch

from fixmatch.models import build_model
from fixmatch.training.ema import EMA
from fixmatch.training.optim import cosine_lr, param_groups


def test_official_cosine_schedule():
    assert cosine_lr(0.03, 0, 1000) == pytest.approx(0.03)
    assert cosine_lr(0.03, 1000, 1000) == pytest.approx(0.03 * math.cos(7 * math.pi / 16))


def test_cosine_is_clipped_at_k_as_official():
    """google-research/fixmatch fixmatch.py:92-93 (commit d4985a1), restated:
        lrate = tf.clip_by_value(tf.to_float(self.step) / (FLAGS.train_kimg << 10), 0, 1)
        lr *= tf.cos(lrate * (7 * np.pi) / (2 * 8))
    (self.step counts images, train_kimg << 10 the run's images: the ratio is k / K)."""

    def official(lr, k, total):
        lrate = min(max(k / total, 0.0), 1.0)
        return lr * math.cos(lrate * (7 * math.pi) / (2 * 8))

    for k in (0, 1, 500, 999, 1000, 1001, 1500, 4000):
        assert cosine_lr(0.03, k, 1000) == pytest.approx(official(0.03, k, 1000), rel=1e-12), k


def test_weight_decay_only_on_conv_and_linear_weights():
    model = build_model("wrn10_1", 10, 3)
    decay, no_decay = param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0
    assert all(p.ndim == 4 or p.ndim == 2 for p in decay["params"])
    bn_and_bias = {
        id(p)
        for m in model.modules()
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Linear))
        for n, p in m.named_parameters()
        if n == "bias" or isinstance(m, torch.nn.BatchNorm2d)
    }
    assert bn_and_bias == {id(p) for p in no_decay["params"]}


def test_ema_follows_decay_and_warmup():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.999, warmup=True)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(step=0)  # warm-up decay (1+0)/(10+0) = 0.1 -> moves 90% of the way
    assert torch.allclose(ema.model.weight, torch.full((1, 2), 0.9))
    assert EMA(model, 0.999, warmup=False).decay_at(0) == 0.999
