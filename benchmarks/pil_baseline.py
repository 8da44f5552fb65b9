"""The conventional FixMatch input pipeline, as peer implementations (kekmodel/FixMatch-pytorch,
USB) build it: a Dataset that augments one PIL image per __getitem__, DataLoader workers.

Weak: random horizontal flip, reflect-pad by side/8 and random crop.  Strong: weak, then
RandAugment (2 ops from 14, p=0.5 each, level 1..9, official FixMatch ranges, PIL ops), then a
side/2 Cutout of grey 127.  Both end as a normalized float tensor (ToTensor + Normalize).
Used only as a speed baseline for ``fixmatch.augment.randaugment`` (see augment_compare.py).
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps
from torch.utils.data import DataLoader, Dataset

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)
FILL = 128


def _signed(v: float) -> float:
    return -v if random.random() < 0.5 else v


def _affine(img: Image.Image, coef: tuple) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, coef, fillcolor=(FILL,) * len(img.getbands()))


# official FixMatch RandAugment pool: op(img, level 1..9) -> img
RANDAUGMENT = {
    "Identity": lambda img, lv: img,
    "AutoContrast": lambda img, lv: ImageOps.autocontrast(img),
    "Equalize": lambda img, lv: ImageOps.equalize(img),
    "Rotate": lambda img, lv: img.rotate(_signed(3 * lv), fillcolor=(FILL,) * len(img.getbands())),
    "Solarize": lambda img, lv: ImageOps.solarize(img, 256 - int(25.6 * lv)),
    "Color": lambda img, lv: ImageEnhance.Color(img).enhance(0.1 + 0.18 * lv),
    "Contrast": lambda img, lv: ImageEnhance.Contrast(img).enhance(0.1 + 0.18 * lv),
    "Brightness": lambda img, lv: ImageEnhance.Brightness(img).enhance(0.1 + 0.18 * lv),
    "Sharpness": lambda img, lv: ImageEnhance.Sharpness(img).enhance(0.1 + 0.18 * lv),
    "ShearX": lambda img, lv: _affine(img, (1, _signed(0.03 * lv), 0, 0, 1, 0)),
    "ShearY": lambda img, lv: _affine(img, (1, 0, 0, _signed(0.03 * lv), 1, 0)),
    "TranslateX": lambda img, lv: _affine(img, (1, 0, _signed(lv * img.size[0] / 32), 0, 1, 0)),
    "TranslateY": lambda img, lv: _affine(img, (1, 0, 0, 0, 1, _signed(lv * img.size[1] / 32))),
    "Posterize": lambda img, lv: ImageOps.posterize(img, 4 - int(0.4 * lv)),
}


def weak(img: Image.Image) -> Image.Image:
    if random.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    w, h = img.size
    pad = round(0.125 * w)
    arr = np.pad(np.asarray(img), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    top, left = random.randint(0, 2 * pad), random.randint(0, 2 * pad)
    return Image.fromarray(arr[top : top + h, left : left + w])


def strong(img: Image.Image) -> Image.Image:
    img = weak(img)
    for name in random.choices(list(RANDAUGMENT), k=2):
        if random.random() < 0.5:
            img = RANDAUGMENT[name](img, random.randint(1, 9))
    arr = np.array(img)
    h, w = arr.shape[:2]
    size = min(h, w) // 2
    cy, cx = random.randrange(h), random.randrange(w)
    arr[max(0, cy - size // 2) : cy - size // 2 + size, max(0, cx - size // 2) : cx - size // 2 + size] = 127
    return Image.fromarray(arr)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """ToTensor + Normalize."""
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean, std = torch.tensor(CIFAR_MEAN).view(3, 1, 1), torch.tensor(CIFAR_STD).view(3, 1, 1)
    return (x - mean) / std


class AugmentedImages(Dataset):
    """uint8 images (N, H, W, 3); item -> weak view, or (weak, strong) views if ``unlabeled``."""

    def __init__(self, images: np.ndarray, unlabeled: bool):
        self.images, self.unlabeled = images, unlabeled

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        if self.unlabeled:
            return to_tensor(weak(img)), to_tensor(strong(img))
        return to_tensor(weak(img))


def make_loaders(images: np.ndarray, num_workers: int = 2) -> tuple[DataLoader, DataLoader]:
    """Labeled batch 64 (weak), unlabeled batch 448 (weak, strong), as kekmodel does."""
    common = dict(shuffle=True, drop_last=True, num_workers=num_workers, persistent_workers=num_workers > 0)
    return (
        DataLoader(AugmentedImages(images, False), batch_size=64, **common),
        DataLoader(AugmentedImages(images, True), batch_size=448, **common),
    )


def time_pil_pipeline(images: np.ndarray, batches: int, num_workers: int = 2) -> float:
    """Images per second (64 + 448 + 448 per step) over ``batches`` steps, after one warm-up
    step (worker start-up excluded)."""
    labeled, unlabeled = make_loaders(images, num_workers)
    it_l, it_u = iter(labeled), iter(unlabeled)
    next(it_l), next(it_u)
    start = time.perf_counter()
    for _ in range(batches):
        try:
            next(it_l), next(it_u)
        except StopIteration:
            it_l, it_u = iter(labeled), iter(unlabeled)
            next(it_l), next(it_u)
    elapsed = time.perf_counter() - start
    del it_l, it_u  # shut the workers down so they stop competing for the CPUs
    return batches * (64 + 448 + 448) / elapsed


if __name__ == "__main__":
    data = np.random.default_rng(0).integers(0, 256, (4096, 32, 32, 3), dtype=np.uint8)
    print(f"PIL baseline, random data: {time_pil_pipeline(data, 5):.0f} images/s")
