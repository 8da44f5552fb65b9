"""The networks against an independent restatement of the official code (google-research/fixmatch,
libml/models.py `ResNet.classifier`): the forward pass, BatchNorm settings, parameter counts and
initialisation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fixmatch.models import build_model, count_parameters

LEAK = 0.1


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


def test_wrn37_2_takes_grey_48px():
    model = build_model("wrn37_2", 7, 1).eval()
    assert model(torch.zeros(2, 1, 48, 48)).shape == (2, 7)
    assert 5.5e6 < count_parameters(model) < 6.5e6
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(m.momentum == 0.001 for m in bn)  # official TF decay 0.999
