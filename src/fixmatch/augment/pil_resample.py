"""Pillow's resampling arithmetic (Resample.c), batched per sample: the six filters, the 22-bit
fixed-point coefficients it computes for a given in -> out size, and one separable pass with its
rounding. CTAugment's ``rescale`` op uses it to equal ``Image.resize`` bit for bit."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

# Pillow's names, in the official CTAugment's order (ANTIALIAS == LANCZOS)
RESCALE_METHODS = ("lanczos", "bicubic", "bilinear", "box", "hamming", "nearest")


def box(x: float) -> float:
    return 1.0 if -0.5 < x <= 0.5 else 0.0


def bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


_F054, _F046 = float(torch.tensor(0.54)), float(torch.tensor(0.46))  # Pillow's 0.54f, 0.46f


def hamming(x: float) -> float:
    x = abs(x)
    if x == 0.0:
        return 1.0
    if x >= 1.0:
        return 0.0
    x = x * math.pi
    return math.sin(x) / x * (_F054 + _F046 * math.cos(x))


def bicubic(x: float) -> float:
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def lanczos(x: float) -> float:
    return sinc(x) * sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


FILTERS = {
    "lanczos": (lanczos, 3.0),
    "bicubic": (bicubic, 2.0),
    "bilinear": (bilinear, 1.0),
    "box": (box, 0.5),
    "hamming": (hamming, 1.0),
}
PRECISION_BITS = 22  # Pillow Resample.c: 32 - 8 - 2


def resize_rows(in_size: int, out_size: int, method: str) -> list[list[int]]:
    """Pillow's 8-bit resampling coefficients for in_size -> out_size as dense integer rows, computed
    with Python floats (C doubles, the same libm) in Resample.c's order: precompute_coeffs, then
    normalize_coeffs_8bpc. NEAREST goes through ImagingScaleAffine instead (running sum of in/out)."""
    rows = [[0] * in_size for _ in range(out_size)]
    one = 1 << PRECISION_BITS
    if method == "nearest":
        step = in_size / out_size
        xo = step * 0.5
        for xx in range(out_size):
            rows[xx][int(xo)] = one
            xo += step
        return rows
    filt, support = FILTERS[method]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    ss = 1.0 / filterscale
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [filt((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for w in k:  # sequential, like the C loop (Python's sum() compensates)
            ww += w
        for x, w in enumerate(k):
            w = w / ww if ww != 0.0 else w
            rows[xx][xmin + x] = int(-0.5 + w * one) if w < 0 else int(0.5 + w * one)
    return rows


@functools.lru_cache(maxsize=16)
def resize_bank(size: int, device: str) -> Tensor:
    """(6, size + 1, size, size) float64: [method, w] resizes a crop of width w (its first w columns)
    back to ``size``; integer coefficients scaled by 2**22. w == size is the identity (PIL copies)."""
    bank = torch.zeros(len(RESCALE_METHODS), size + 1, size, size, dtype=torch.float64)
    for m, method in enumerate(RESCALE_METHODS):
        for w in range(1, size):
            bank[m, w, :, :w] = torch.tensor(resize_rows(w, size, method), dtype=torch.float64)
        bank[m, size] = torch.eye(size, dtype=torch.float64) * (1 << PRECISION_BITS)
    return bank.to(device)


def resample(x: Tensor, mat: Tensor, start: Tensor) -> Tensor:
    """One separable pass along the last axis: crop from ``start`` (per sample), multiply by the
    per-sample (size, size) coefficient matrix, then Pillow's (sum + 2**21) >> 22 and clip.
    Products < 2**31 and sums < 2**37: float64 is exact."""
    n, c, h, w = x.shape
    cols = (torch.arange(w, device=x.device) + start.view(n, 1)).clamp_(max=w - 1)  # beyond the crop: weight 0
    xs = x.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w)).to(torch.float64)
    acc = torch.matmul(xs.view(n, c * h, w), mat.transpose(1, 2)).view(n, c, h, w)
    return acc.add_(1 << (PRECISION_BITS - 1)).mul_(1.0 / (1 << PRECISION_BITS)).floor_().clamp_(0, 255)
