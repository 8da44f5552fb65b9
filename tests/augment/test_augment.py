"""Tests for fixmatch.augment.randaugment: every op against PIL on real CIFAR-10 and FER2013 images.

Agreement with PIL (Pillow 10-13), checked below on 32 CIFAR-10 (32x32x3) and 16 FER2013
(48x48x1) images at several magnitudes each, including non-integer ones:

=============  ==========  ============================================================
op             agreement   PIL reference
=============  ==========  ============================================================
identity       EXACT       the image itself
autocontrast   EXACT       ImageOps.autocontrast(img)
equalize       EXACT       ImageOps.equalize(img)
rotate         EXACT       img.rotate(deg, fillcolor=grey 128)  (NEAREST)
shear_x/y      EXACT       img.transform(size, AFFINE, (1, m, 0, 0, 1, 0), fillcolor=128)
translate_x/y  EXACT       img.transform(size, AFFINE, (1, 0, px, 0, 1, 0), fillcolor=128)
solarize       EXACT       ImageOps.solarize(img, threshold)
posterize      EXACT       ImageOps.posterize(img, bits)
color          EXACT       ImageEnhance.Color(img).enhance(f)
contrast       EXACT       ImageEnhance.Contrast(img).enhance(f)
brightness     EXACT       ImageEnhance.Brightness(img).enhance(f)
sharpness      EXACT       ImageEnhance.Sharpness(img).enhance(f)
=============  ==========  ============================================================

Every comparison asserts bit-exact equality: no tolerance is used anywhere.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps
from shared_data import SHARED, read_head

from fixmatch.augment.randaugment import POLICIES, RA_OP_NAMES, _apply, cutout, strong_augment
from fixmatch.augment.weak import weak_augment
from fixmatch.config import TrainConfig
from fixmatch.training.resolve import resolve


def _one_op(name: str, images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """RandAugment's op ``name`` at ``magnitude`` (N,) (PIL units) on every image: one slot through the op table."""
    op = torch.full((len(images),), RA_OP_NAMES.index(name))
    return _apply(images, op, torch.as_tensor(magnitude).expand(len(images)))


OPS = {name: functools.partial(_one_op, name) for name in RA_OP_NAMES}

MAGNITUDES = {
    "identity": [0.0],
    "autocontrast": [0.0],
    "equalize": [0.0],
    "rotate": [-30, -27, -3, 3, 12.5, 27, 30, 90, 180],
    "shear_x": [-0.3, -0.24, 0.03, 0.15, 0.27],
    "shear_y": [-0.3, -0.24, 0.03, 0.15, 0.27],
    "translate_x": [-9, -2, 1, 5, 9, 2.7, -3.3],
    "translate_y": [-9, -2, 1, 5, 9, 2.7, -3.3],
    "solarize": [0, 26, 128, 100.5, 230, 256],
    "posterize": [1, 2, 3, 4, 7, 8],
    **{name: [0, 0.1, 0.28, 0.5, 0.95, 1.0, 1.72, 1.9] for name in ("color", "contrast", "brightness", "sharpness")},
}


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    """Real uint8 images (N, H, W, C): 32 CIFAR-10 and 16 FER2013."""
    if not (SHARED / "cifar10_device.npz.xz").is_file():
        pytest.skip(f"offline datasets not found at {SHARED}")
    return {"cifar": read_head(SHARED / "cifar10_device.npz.xz", 32), "fer": read_head(SHARED / "fer2013.npz.xz", 16)}


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).contiguous()


def _pil_op(name: str, im: Image.Image, m: float) -> Image.Image:
    fill = 128 if im.mode == "L" else (128, 128, 128)
    if name == "identity":
        return im
    if name in ("autocontrast", "equalize"):
        return getattr(ImageOps, name.lower())(im)
    if name == "rotate":
        return im.rotate(m, fillcolor=fill)
    if name == "solarize":
        return ImageOps.solarize(im, m)
    if name == "posterize":
        return ImageOps.posterize(im, int(m))
    if name in ("color", "contrast", "brightness", "sharpness"):
        return getattr(ImageEnhance, name.capitalize())(im).enhance(m)
    coef = {
        "shear_x": (1, m, 0, 0, 1, 0),
        "shear_y": (1, 0, 0, m, 1, 0),
        "translate_x": (1, 0, m, 0, 1, 0),
        "translate_y": (1, 0, 0, 0, 1, m),
    }[name]
    return im.transform(im.size, Image.AFFINE, coef, fillcolor=fill)


@pytest.mark.parametrize("dataset", ["cifar", "fer"])
@pytest.mark.parametrize("name", sorted(OPS))
def test_op_matches_pil_exactly(images, dataset, name):
    """OPS[name] equals the PIL op bit for bit at every magnitude in MAGNITUDES (table above)."""
    arr = images[dataset]
    x = _nchw(arr)
    for m in MAGNITUDES[name]:
        out = OPS[name](x, torch.full((len(x),), float(m), dtype=torch.float64))
        assert out.dtype == torch.uint8 and out.shape == x.shape
        got = out.permute(0, 2, 3, 1).numpy()
        for k, a in enumerate(arr):
            ref = np.asarray(_pil_op(name, Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a), m))
            assert np.array_equal(got[k], ref.reshape(a.shape)), f"{name}({m}) image {k}"


def test_one_op_table_serves_both_policies():
    """RandAugment and CTAugment draw from the one vocabulary of the op table, which holds nothing else;
    a policy naming an op the table lacks (or one twice), or giving fewer arguments than its ops read,
    is refused."""
    from fixmatch.augment.ctaugment import CTA_OP_NAMES
    from fixmatch.augment.kernels import OP_NAMES, apply

    assert set(RA_OP_NAMES) | set(CTA_OP_NAMES) == set(OP_NAMES)
    x, op = torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.long)
    one = torch.zeros(2, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="not in the op table or named twice: \\['twirl'\\].*identity, autocontrast"):
        apply(x, op, one, ("rotate", "twirl"), fill=0)
    with pytest.raises(ValueError, match="named twice: \\('rotate', 'rotate'\\)"):
        apply(x, op, one, ("rotate", "rotate"), fill=0)
    with pytest.raises(ValueError, match="args must be \\(N, k >= 3\\)"):
        apply(x, op, one, ("rotate", "cutout"), fill=0)  # cutout reads (side, cy, cx)


def test_ops_accept_float32_magnitudes(images):
    x = _nchw(images["cifar"][:4])
    for name, f in OPS.items():
        assert f(x, torch.full((4,), 0.5)).shape == x.shape, name


def _weak_candidates(img: torch.Tensor, pad: int, flips: bool) -> list[torch.Tensor]:
    """Every flip x shift of one (C, H, W) image under reflect-pad-and-crop."""
    padded = torch.from_numpy(np.pad(img.numpy(), ((0, 0), (pad, pad), (pad, pad)), mode="reflect"))
    h, w = img.shape[1:]
    out = []
    for src in [padded, padded.flip(-1)] if flips else [padded]:
        out += [src[:, i : i + h, j : j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
    return out


@pytest.mark.parametrize("dataset,size", [("cifar", 32), ("cifar", 8), ("fer", 48)])
def test_weak_augment_is_flip_and_reflect_shift(images, dataset, size):
    """Each output equals one of the 2 * (2p+1)^2 flipped/shifted reflect-padded copies,
    p = round(0.125 * side); with flip=False only the unflipped copies."""
    x = _nchw(images[dataset][:12, :size, :size])
    pad = round(0.125 * size)
    for flip in (True, False):
        out = weak_augment(x, flip=flip, generator=torch.Generator().manual_seed(3))
        for k in range(len(x)):
            assert any(torch.equal(out[k], c) for c in _weak_candidates(x[k], pad, flip)), k
    flipped = [weak_augment(x[:1].expand(64, -1, -1, -1), flip=True, generator=torch.Generator().manual_seed(5))]
    assert len({bytes(o.numpy()) for o in flipped[0]}) > 1


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("dataset,size", [("cifar", 32), ("cifar", 8), ("fer", 48)])
def test_strong_augment_shapes_and_determinism(images, policy, dataset, size):
    x = _nchw(images[dataset][:16, :size, :size])
    runs = [strong_augment(x, flip=True, generator=torch.Generator().manual_seed(s), policy=policy) for s in (7, 7, 8)]
    assert runs[0].dtype == torch.uint8 and runs[0].shape == x.shape
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("policy", POLICIES)
def test_grouped_cpu_path_equals_masked_gpu_path(images, policy):
    """CPU runs each stage on its own samples; CUDA runs the sync-free masked path: same result."""
    x = _nchw(images["cifar"]).repeat(3, 1, 1, 1)
    g = torch.Generator().manual_seed(11)
    op = torch.randint(0, len(OPS), (len(x),), generator=g)
    for seed in range(2):
        a = strong_augment(x, flip=True, generator=torch.Generator().manual_seed(seed), policy=policy, grouped=True)
        b = strong_augment(x, flip=True, generator=torch.Generator().manual_seed(seed), policy=policy, grouped=False)
        assert torch.equal(a, b)
    mag = torch.rand(len(x), generator=g, dtype=torch.float64) * 2
    assert torch.equal(_apply(x, op, mag, grouped=True), _apply(x, op, mag, grouped=False))


def test_strong_augment_differs_per_sample_and_has_cutout(images):
    """One image repeated: samples get different ops; each has a grey-127 cutout block."""
    x = _nchw(images["cifar"][:1]).expand(64, -1, -1, -1).contiguous()
    out = strong_augment(x, flip=False, generator=torch.Generator().manual_seed(0))
    assert len({bytes(o.numpy()) for o in out}) > 50
    grey = (out == 127).all(1, keepdim=True).float()
    # the clipped 16x16 square keeps at least 8x8 pixels (its centre lies inside the image)
    assert (torch.nn.functional.avg_pool2d(grey, 8, stride=1).amax((1, 2, 3)) == 1).all()


@pytest.mark.parametrize("size,side", [(16, 32), (4, 8)])
def test_cutout_square(size, side):
    x = torch.zeros(200, 3, side, side, dtype=torch.uint8)
    out = cutout(x, size, torch.Generator().manual_seed(1))
    mask = (out == 127).all(1)
    assert ((out == 0) | (out == 127)).all() and torch.equal(mask, (out == 127).any(1))
    rows, cols = mask.any(2), mask.any(1)
    assert torch.equal(mask, rows[:, :, None] & cols[:, None, :])  # a rectangle
    n_rows, n_cols = rows.sum(1), cols.sum(1)
    assert (n_rows <= size).all() and (n_rows >= size // 2).all() and (n_cols >= size // 2).all()
    assert (n_rows == size).any() and (n_cols == size).any()


def test_generator_state_resumes():
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(42)
    strong_augment(x, flip=True, generator=g)
    state = g.get_state()
    a = strong_augment(x, flip=True, generator=g)
    g.set_state(state)
    assert torch.equal(a, strong_augment(x, flip=True, generator=g))


def test_unknown_policy_raises():
    x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="official, paper, usb"):
        strong_augment(x, flip=True, generator=torch.Generator(), policy="nope")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _synthetic(n: int, seed: int = 0) -> torch.Tensor:
    """Gradients plus noise (realistic histograms), every third image pure noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.linspace(0, 255, 32).view(1, 1, 1, 32) * torch.rand(n, 3, 1, 1, generator=g)
    x = (base + torch.randint(0, 40, (n, 3, 32, 32), generator=g)).clamp(0, 255).to(torch.uint8)
    x[::3] = torch.randint(0, 256, (len(x[::3]), 3, 32, 32), generator=g, dtype=torch.uint8)
    return x


@cuda
@pytest.mark.parametrize("policy", POLICIES)
def test_cuda_masked_path_equals_cpu(policy):
    """The sync-free masked path on CUDA gives the CPU (grouped) result bit for bit."""
    from fixmatch.augment.randaugment import _magnitudes

    x, g, n = _synthetic(1024), torch.Generator().manual_seed(1), 1024
    op = torch.randint(0, len(OPS), (n,), generator=g)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
    mag = _magnitudes(
        policy, op, torch.randint(1, 10, (n,), generator=g), sign, torch.rand(n, generator=g, dtype=torch.float64), 32
    )
    want = _apply(x, op, mag, grouped=True)
    assert torch.equal(_apply(x.cuda(), op.cuda(), mag.cuda()).cpu(), want)


@cuda
def test_cuda_no_host_sync_and_deterministic():
    x = _synthetic(256).cuda()
    torch.cuda.set_sync_debug_mode("error")  # any host sync raises
    try:
        runs = [
            strong_augment(x, flip=True, generator=torch.Generator("cuda").manual_seed(3), policy=p)
            for p in POLICIES
            for _ in range(2)
        ]
        weak_augment(x[:, :1], flip=True, generator=torch.Generator("cuda").manual_seed(3))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert all(torch.equal(runs[i], runs[i + 1]) for i in range(0, len(runs), 2))


@pytest.mark.parametrize("dataset,flip", [("cifar10", True), ("svhn", False)])
def test_weak_view_is_a_flip_and_a_uniform_shift(dataset, flip):
    """Pixel (16, 16) of a coordinate-coded 32x32 image tells each output's flip and shift: the flip
    has p=0.5 (only where the dataset flips) and the shift is uniform over -4..4 in each axis."""
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
    identity = augment.RA_OP_NAMES.index("identity")
    rotate = augment.RA_OP_NAMES.index("rotate")
    for op, mag in calls:
        share = torch.bincount(op, minlength=14).float() / n
        assert abs(share[identity].item() - (0.5 + 0.5 / 14)) < 0.02
        others = torch.cat([share[:identity], share[identity + 1 :]])
        assert ((others - 0.5 / 14).abs() < 0.01).all()
        levels = (mag[op == rotate] / 3).abs().round().long()  # official Rotate: 3 * level degrees
        assert set(levels.tolist()) == set(range(1, 10))
