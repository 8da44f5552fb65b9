"""The PIL-exact kernels both augmentations are built on, batched per sample on uint8 (or float32)
tensors (N, C, H, W): PIL's affine warp (16.16 fixed point, nearest neighbour), its RGB -> L grey,
its SMOOTH filter, per-image histograms and the AutoContrast / Equalize lookup tables. RandAugment
(randaugment.py) and CTAugment (ctaugment_ops.py) call them; each is restated from Pillow's C code
in its docstring, and the ops built on them equal PIL bit-exactly (tests/test_augment.py,
tests/test_ctaugment.py).

Ops are named by RandAugment's OP_NAMES (the index a per-sample `op` tensor holds); CTAugment maps
its geometric ops onto them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

OP_NAMES = (
    "Identity",
    "AutoContrast",
    "Equalize",
    "Rotate",
    "Solarize",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "TranslateX",
    "TranslateY",
    "Posterize",
    "ShearY",
)
OP_INDEX = {name: i for i, name in enumerate(OP_NAMES)}
GEOM = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"})
GEOM_FILL = 128  # official: 127.5 (0 in [-1, 1]); the nearest uint8 above it


def is_op(op: Tensor, name: str) -> Tensor:
    return op == OP_INDEX[name]


def bshape(v: Tensor) -> Tensor:
    """(N,) -> (N, 1, 1, 1) for per-sample broadcasting over images."""
    return v.view(-1, 1, 1, 1)


def pil_affine(op: Tensor, mag: Tensor, h: int, w: int, present: frozenset = GEOM) -> Tensor:
    """Per-sample PIL AFFINE coefficients (a..f), output pixel -> input pixel, float64.

    Identity for samples whose op is not geometric.  Rotation follows ``Image.rotate``
    exactly (angle mod 360, cos/sin rounded to 15 decimals, centre (w/2, h/2)).
    """
    m = mag.to(torch.float64)
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    ang = -torch.remainder(m, 360.0) * (math.pi / 180.0)
    cos, sin = torch.round(torch.cos(ang), decimals=15), torch.round(torch.sin(ang), decimals=15)
    cx, cy = w / 2.0, h / 2.0
    rot = (cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy)
    table = {  # PIL: transform(size, AFFINE, (1, v, 0, 0, 1, 0)) etc.
        "Rotate": rot,
        "ShearX": (one, m, zero, zero, one, zero),
        "ShearY": (one, zero, zero, m, one, zero),
        "TranslateX": (one, zero, m, zero, one, zero),
        "TranslateY": (one, zero, zero, zero, one, m),
    }
    coef = torch.stack((one, zero, zero, zero, one, zero), 1)
    for name, c in table.items():
        if name in present:
            coef = torch.where(is_op(op, name)[:, None], torch.stack(c, 1), coef)
    return coef


def fix(v: Tensor) -> Tensor:
    """PIL's 16.16 fixed point: FLOOR(v * 65536 + 0.5)."""
    return torch.floor(v * 65536.0 + 0.5)


def warp(x: Tensor, coef: Tensor, fill: int = GEOM_FILL) -> Tensor:
    """Nearest-neighbour affine warp with PIL's exact index arithmetic, one gather.

    PIL (Geometry.c) maps output pixel (x, y) to input pixel ``(xx >> 16, yy >> 16)`` with
    ``xx = FIX(a2 + a0/2 + a1/2) + x*FIX(a0) + y*FIX(a1)`` (``affine_fixed``) for rotate/shear,
    and to ``floor(a2 + 0.5 + x)`` (``ImagingScaleAffine``, float) when b == d == 0, i.e. for
    translations; with unit scale the latter is the fixed-point formula with the offset's
    integer part, so one int32 formula serves both.  Pixels that land outside the image read
    a 1-pixel border of ``fill`` added around it (indices clamped into that border).
    """
    n, c, h, w = x.shape
    a0, a1, a2, a3, a4, a5 = coef.unbind(1)
    scale = (a1 == 0) & (a3 == 0)
    f2 = torch.where(scale, torch.floor(a2 + a0 * 0.5) * 65536, fix(a2 + a0 * 0.5 + a1 * 0.5))
    f5 = torch.where(scale, torch.floor(a5 + a4 * 0.5) * 65536, fix(a5 + a3 * 0.5 + a4 * 0.5))
    f = torch.stack((fix(a0), fix(a1), f2 + 65536, fix(a3), fix(a4), f5 + 65536), 1)
    f0, f1, f2, f3, f4, f5 = (v.view(n, 1, 1) for v in f.int().unbind(1))  # +65536: border
    xs = torch.arange(w, device=x.device, dtype=torch.int32).view(1, 1, w)
    ys = torch.arange(h, device=x.device, dtype=torch.int32).view(1, h, 1)
    xin = ((f2 + xs * f0) + ys * f1).bitwise_right_shift_(16).clamp_(0, w + 1)
    yin = ((f5 + xs * f3) + ys * f4).bitwise_right_shift_(16).clamp_(0, h + 1)
    flat = (yin * (w + 2)).add_(xin).view(n, 1, h * w).long()
    src = torch.nn.functional.pad(x, (1, 1, 1, 1), value=fill).view(n, c, -1)
    return src.gather(2, flat.expand(n, c, h * w)).view(n, c, h, w)


def pil_grey(xf: Tensor) -> Tensor:
    """PIL's RGB -> L conversion, (19595 R + 38470 G + 7471 B + 0x8000) >> 16, on float32
    images (N,C,H,W) -> (N,1,H,W).  Every intermediate is an integer < 2**24, so exact."""
    if xf.shape[1] == 1:
        return xf
    acc = xf[:, 0:1] * 19595 + xf[:, 1:2] * 38470 + xf[:, 2:3] * 7471 + 32768
    return acc.mul_(1 / 65536).floor_()


def pil_smooth(xf: Tensor) -> Tensor:
    """PIL's ImageFilter.SMOOTH ([[1,1,1],[1,5,1],[1,1,1]] / 13), borders copied, float32.

    PIL computes trunc(0.5 + sum(k * p)) in float32.  The exact value 0.5 + S/13 (S the
    integer weighted sum) is never within 1/26 of an integer, far beyond float32 error, so
    floor(S / 13 + 0.5) here gives PIL's result exactly.
    """
    rows = xf[:, :, :-2] + xf[:, :, 1:-1] + xf[:, :, 2:]
    s = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:] + 4 * xf[:, :, 1:-1, 1:-1]
    out = xf.clone()
    out[:, :, 1:-1, 1:-1] = s.mul_(1 / 13).add_(0.5).floor_()
    return out


def histogram(x: Tensor) -> Tensor:
    """Per image and channel 256-bin histograms, (N, C, 256) int64, no host sync."""
    n, c = x.shape[:2]
    if x.device.type == "cpu":  # bincount is 2x faster on CPU; on CUDA it syncs (output size)
        rows = torch.arange(n * c, dtype=torch.int64).view(n * c, 1) * 256
        idx = (x.reshape(n * c, -1).long() + rows).view(-1)
        return torch.bincount(idx, minlength=n * c * 256).view(n, c, 256)
    idx = x.reshape(n * c, -1).long()
    hist = torch.zeros(n * c, 256, dtype=torch.int64, device=x.device)
    return hist.scatter_add_(1, idx, torch.ones_like(idx)).view(n, c, 256)


def autocontrast_lut(lo: Tensor, hi: Tensor, i: Tensor) -> Tensor:
    """ImageOps.autocontrast(cutoff=0): map [lo, hi] to [0, 255] with PIL's float64 rule."""
    # full_like(...) / t: a Python scalar divided by a tensor is computed as scalar * (1 / t)
    # by torch, which is not correctly rounded and flips int() on some pixels
    scale = torch.full_like(lo, 255.0) / (hi - lo).clamp(min=1)
    lut = torch.trunc(i * scale + -lo * scale).clamp(0, 255)
    return torch.where(hi <= lo, i, lut)


def equalize_lut(hist: Tensor, lo: Tensor, hi: Tensor, i: Tensor) -> Tensor:
    """ImageOps.equalize: step = (total - h[last nonzero]) // 255, lut = (step//2 + cdf) // step,
    identity when only one value is present or step == 0."""
    step = (hist.sum(-1, keepdim=True) - hist.gather(-1, hi.long())) // 255
    cdf = hist.cumsum(-1) - hist  # exclusive cumulative sum: pixels below value i
    lut = torch.div(step // 2 + cdf, step.clamp(min=1), rounding_mode="floor").clamp(max=255)
    return torch.where((hi <= lo) | (step == 0), i, lut.double())
