"""Batched, per-sample-randomized FixMatch augmentation on uint8 tensors (N, C, H, W).

The same code runs on CPU and CUDA.  All randomness comes from a ``torch.Generator`` on
the images' device, so results are reproducible and resumable.  On a GPU nothing inside
syncs with the host (no ``.item()``, no data-dependent shapes), so it never waits for the CPU.

Every op reproduces its PIL counterpart (Pillow 10-13) on uint8 images:

* geometric ops use PIL's own nearest-neighbour affine arithmetic (16.16 fixed point for
  rotate/shear, floating point for pure translations, ``Image.NEAREST``), the uncovered area
  filled with grey 128: the official code works on RGBA images whose uncovered pixels are
  transparent and become 0 in its [-1, 1] space, i.e. grey 127.5, which uint8 cannot hold;
* enhancers (Color/Contrast/Brightness/Sharpness) use PIL's float32 ``Image.blend`` formula
  ``trunc(clip(D + f * (x - D)))`` against PIL's degenerate image ``D``;
* AutoContrast/Equalize/Solarize/Posterize build PIL's per-image, per-channel 256-entry
  lookup table from batched histograms and apply it with one gather.

One RandAugment slot picks one op per sample; the slot runs as three batched stages
(one affine gather, one blend, one LUT gather).  Off the CPU every sample goes through every
stage, samples of other stages getting neutral parameters (identity matrix, factor 1,
identity LUT), which are exact.  On the CPU each stage runs only on its own samples (index
selection with data-dependent sizes, which costs nothing there); tests check both paths give
identical results.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

__all__ = ["OPS", "POLICIES", "weak_augment", "strong_augment", "cutout"]

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
_IDX = {name: i for i, name in enumerate(OP_NAMES)}
_GEOM = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"})
_BLEND = frozenset({"Color", "Contrast", "Brightness", "Sharpness"})
_LUT = frozenset({"AutoContrast", "Equalize", "Solarize", "Posterize"})
_ALL = frozenset(OP_NAMES)

POLICIES: tuple[str, ...] = ("official", "paper", "usb")
GEOM_FILL = 128  # official: 127.5 (0 in [-1, 1]); the nearest uint8 above it
CUTOUT_FILL = 127  # official FixMatch cutout grey


def _is(op: Tensor, name: str) -> Tensor:
    return op == _IDX[name]


def _bshape(v: Tensor) -> Tensor:
    """(N,) -> (N, 1, 1, 1) for per-sample broadcasting over images."""
    return v.view(-1, 1, 1, 1)


# --------------------------------------------------------------------------- geometry


def _pil_affine(op: Tensor, mag: Tensor, h: int, w: int, present: frozenset = _GEOM) -> Tensor:
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
            coef = torch.where(_is(op, name)[:, None], torch.stack(c, 1), coef)
    return coef


def _fix(v: Tensor) -> Tensor:
    """PIL's 16.16 fixed point: FLOOR(v * 65536 + 0.5)."""
    return torch.floor(v * 65536.0 + 0.5)


def _warp(x: Tensor, coef: Tensor, fill: int = GEOM_FILL) -> Tensor:
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
    f2 = torch.where(scale, torch.floor(a2 + a0 * 0.5) * 65536, _fix(a2 + a0 * 0.5 + a1 * 0.5))
    f5 = torch.where(scale, torch.floor(a5 + a4 * 0.5) * 65536, _fix(a5 + a3 * 0.5 + a4 * 0.5))
    f = torch.stack((_fix(a0), _fix(a1), f2 + 65536, _fix(a3), _fix(a4), f5 + 65536), 1)
    f0, f1, f2, f3, f4, f5 = (v.view(n, 1, 1) for v in f.int().unbind(1))  # +65536: border
    xs = torch.arange(w, device=x.device, dtype=torch.int32).view(1, 1, w)
    ys = torch.arange(h, device=x.device, dtype=torch.int32).view(1, h, 1)
    xin = ((f2 + xs * f0) + ys * f1).bitwise_right_shift_(16).clamp_(0, w + 1)
    yin = ((f5 + xs * f3) + ys * f4).bitwise_right_shift_(16).clamp_(0, h + 1)
    flat = (yin * (w + 2)).add_(xin).view(n, 1, h * w).long()
    src = torch.nn.functional.pad(x, (1, 1, 1, 1), value=fill).view(n, c, -1)
    return src.gather(2, flat.expand(n, c, h * w)).view(n, c, h, w)


# --------------------------------------------------------------------------- blends


def _grey(xf: Tensor) -> Tensor:
    """PIL's RGB -> L conversion, (19595 R + 38470 G + 7471 B + 0x8000) >> 16, on float32
    images (N,C,H,W) -> (N,1,H,W).  Every intermediate is an integer < 2**24, so exact."""
    if xf.shape[1] == 1:
        return xf
    acc = xf[:, 0:1] * 19595 + xf[:, 1:2] * 38470 + xf[:, 2:3] * 7471 + 32768
    return acc.mul_(1 / 65536).floor_()


def _smooth(xf: Tensor) -> Tensor:
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


def _blend_stage(x: Tensor, op: Tensor, mag: Tensor, present: frozenset) -> Tensor:
    """ImageEnhance.X(img).enhance(f) == Image.blend(degenerate, img, f) for each sample.

    Image.blend computes ``trunc(clip(D + f * (x - D), 0, 255))`` in float32 with f cast
    to float32; samples with another op use f = 1, which returns x exactly.  Degenerates:
    Brightness black, Contrast the grey mean, Color the grey image, Sharpness SMOOTH.
    """
    n = x.shape[0]
    xf = x.float()
    grey = _grey(xf) if present & {"Color", "Contrast"} else xf[:, :1]  # the fallback is never read
    deg = torch.zeros(n, device=x.device)
    if "Contrast" in present:  # int(mean + 0.5) exactly: floor((2 * sum + npix) / (2 * npix))
        total, npix = grey.sum((1, 2, 3), dtype=torch.float64), grey[0].numel()
        mean = torch.floor((2 * total + npix) / (2 * npix))  # sums < 2**53: exact
        deg = torch.where(_is(op, "Contrast"), mean.float(), deg)
    deg = _bshape(deg)
    if "Color" in present:
        deg = deg + _bshape(_is(op, "Color").float()) * grey
    if "Sharpness" in present:
        deg = deg + _bshape(_is(op, "Sharpness").float()) * _smooth(xf)
    sel = _is(op, "Color") | _is(op, "Contrast") | _is(op, "Brightness") | _is(op, "Sharpness")
    f = _bshape(torch.where(sel, mag.float(), 1.0))
    out = xf.sub_(deg).mul_(f).add_(deg)
    return out.clamp_(0, 255).to(torch.uint8)  # float -> uint8 truncates like PIL's cast


# --------------------------------------------------------------------------- lookup tables


def _histogram(x: Tensor) -> Tensor:
    """Per image and channel 256-bin histograms, (N, C, 256) int64, no host sync."""
    n, c = x.shape[:2]
    if x.device.type == "cpu":  # bincount is 2x faster on CPU; on CUDA it syncs (output size)
        rows = torch.arange(n * c, dtype=torch.int64).view(n * c, 1) * 256
        idx = (x.reshape(n * c, -1).long() + rows).view(-1)
        return torch.bincount(idx, minlength=n * c * 256).view(n, c, 256)
    idx = x.reshape(n * c, -1).long()
    hist = torch.zeros(n * c, 256, dtype=torch.int64, device=x.device)
    return hist.scatter_add_(1, idx, torch.ones_like(idx)).view(n, c, 256)


def _autocontrast_lut(lo: Tensor, hi: Tensor, i: Tensor) -> Tensor:
    """ImageOps.autocontrast(cutoff=0): map [lo, hi] to [0, 255] with PIL's float64 rule."""
    # full_like(...) / t: a Python scalar divided by a tensor is computed as scalar * (1 / t)
    # by torch, which is not correctly rounded and flips int() on some pixels
    scale = torch.full_like(lo, 255.0) / (hi - lo).clamp(min=1)
    lut = torch.trunc(i * scale + -lo * scale).clamp(0, 255)
    return torch.where(hi <= lo, i, lut)


def _equalize_lut(hist: Tensor, lo: Tensor, hi: Tensor, i: Tensor) -> Tensor:
    """ImageOps.equalize: step = (total - h[last nonzero]) // 255, lut = (step//2 + cdf) // step,
    identity when only one value is present or step == 0."""
    step = (hist.sum(-1, keepdim=True) - hist.gather(-1, hi.long())) // 255
    cdf = hist.cumsum(-1) - hist  # exclusive cumulative sum: pixels below value i
    lut = torch.div(step // 2 + cdf, step.clamp(min=1), rounding_mode="floor").clamp(max=255)
    return torch.where((hi <= lo) | (step == 0), i, lut.double())


def _lut_stage(x: Tensor, op: Tensor, mag: Tensor, present: frozenset) -> Tensor:
    """AutoContrast/Equalize/Solarize/Posterize as one per-sample, per-channel LUT gather."""
    n, c, h, w = x.shape
    i = torch.arange(256, device=x.device, dtype=torch.float64).expand(n, c, 256)
    m = mag.to(torch.float64).view(n, 1, 1)
    lut = i
    if present & {"AutoContrast", "Equalize"}:
        lo = x.amin((2, 3)).double().unsqueeze(-1)  # lowest / highest value present, (N, C, 1)
        hi = x.amax((2, 3)).double().unsqueeze(-1)
        if "AutoContrast" in present:
            lut = torch.where(_is(op, "AutoContrast").view(n, 1, 1), _autocontrast_lut(lo, hi, i), lut)
        if "Equalize" in present:
            eq = _equalize_lut(_histogram(x), lo, hi, i)
            lut = torch.where(_is(op, "Equalize").view(n, 1, 1), eq, lut)
    if "Solarize" in present:  # ImageOps.solarize: i if i < threshold else 255 - i
        lut = torch.where(_is(op, "Solarize").view(n, 1, 1), torch.where(i < m, i, 255 - i), lut)
    if "Posterize" in present:  # ImageOps.posterize: i & ~(2 ** (8 - bits) - 1)
        drop = torch.exp2(8 - torch.trunc(m)).long()
        post = torch.bitwise_and(i.long(), 256 - drop).double()
        lut = torch.where(_is(op, "Posterize").view(n, 1, 1), post, lut)
    lut = lut.to(torch.uint8)
    return lut.gather(2, x.reshape(n, c, h * w).long()).view(n, c, h, w)


# --------------------------------------------------------------------------- ops


def _apply_masked(x: Tensor, op: Tensor, mag: Tensor, present: frozenset = _ALL) -> Tensor:
    """Apply op[k] with magnitude mag[k] to image k, whole batch through every stage (samples
    of other stages get neutral parameters): fixed shapes, no host sync.  ``present`` is a
    static set of the ops that may occur; stages and branches for absent ops are skipped."""
    if present & _GEOM:
        x = _warp(x, _pil_affine(op, mag, x.shape[2], x.shape[3], present))
    if present & _BLEND:
        x = _blend_stage(x, op, mag, present)
    if present & _LUT:
        x = _lut_stage(x, op, mag, present)
    return x


def _apply_grouped(x: Tensor, op: Tensor, mag: Tensor) -> Tensor:
    """Same result as ``_apply_masked``, but each stage runs only on the samples whose op
    belongs to it.  Uses data-dependent shapes (nonzero): free on CPU, a sync on a GPU."""
    out = x.clone()
    for stage in (_GEOM, _BLEND, _LUT):
        ids = torch.tensor([_IDX[name] for name in stage], device=x.device)
        idx = torch.isin(op, ids).nonzero().squeeze(1)
        if idx.numel():
            out[idx] = _apply_masked(x[idx], op[idx], mag[idx], stage)
    return out


def _apply(x: Tensor, op: Tensor, mag: Tensor, grouped: bool | None = None) -> Tensor:
    """Per-sample ops: grouped on CPU (less work), masked elsewhere (no host syncs)."""
    if grouped if grouped is not None else x.device.type == "cpu":
        return _apply_grouped(x, op, mag)
    return _apply_masked(x, op, mag)


def _make_op(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    def op(images: Tensor, magnitude: Tensor) -> Tensor:
        if name == "Identity":
            return images.clone()
        idx = torch.full((images.shape[0],), _IDX[name], device=images.device)
        mag = torch.as_tensor(magnitude, device=images.device).expand(images.shape[0])
        return _apply_masked(images, idx, mag, frozenset({name}))

    op.__name__ = name
    op.__doc__ = f"{name}(images uint8 (N,C,H,W), magnitude (N,)) in PIL units, like PIL."
    return op


OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {name: _make_op(name) for name in OP_NAMES}


# --------------------------------------------------------------------------- views


def _reflect(j: Tensor, n: int) -> Tensor:
    """Reflect-pad index (edge not repeated, like np.pad 'reflect'); valid for |pad| < n."""
    return (n - 1) - ((n - 1) - j.abs()).abs()


def weak_augment(x: Tensor, *, flip: bool, generator: torch.Generator) -> Tensor:
    """Random horizontal flip (p=0.5, if ``flip``), then a random integer translation in
    [-pad, pad] in x and y with reflect padding, pad = round(0.125 * side): the official
    pad-and-random-crop.  One gather for the whole batch."""
    n, c, h, w = x.shape
    dev = x.device
    flips = torch.rand(n, device=dev, generator=generator) < 0.5  # drawn always: same stream
    ph, pw = round(0.125 * h), round(0.125 * w)
    dy = torch.randint(-ph, ph + 1, (n, 1), device=dev, generator=generator)
    dx = torch.randint(-pw, pw + 1, (n, 1), device=dev, generator=generator)
    rows = _reflect(torch.arange(h, device=dev) + dy, h)
    cols = _reflect(torch.arange(w, device=dev) + dx, w)
    if flip:  # crop of the flipped image = mirrored crop coordinates
        cols = torch.where(flips[:, None], w - 1 - cols, cols)
    idx = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w)
    return x.reshape(n, c, h * w).gather(2, idx.expand(n, c, h * w)).view(n, c, h, w)


def cutout(x: Tensor, size: int | Tensor, generator: torch.Generator, fill: int = CUTOUT_FILL) -> Tensor:
    """Fill one ``size`` x ``size`` square per image (``size`` an int or a per-sample (N,)
    tensor) with grey; centre uniform over the image pixels, square clipped at the borders."""
    n, _, h, w = x.shape
    dev = x.device
    cy = torch.randint(0, h, (n,), device=dev, generator=generator)
    cx = torch.randint(0, w, (n,), device=dev, generator=generator)
    size = torch.full((n,), size, device=dev) if isinstance(size, int) else size.to(dev)
    y0, x0 = (cy - size // 2).view(n, 1, 1), (cx - size // 2).view(n, 1, 1)
    size = size.view(n, 1, 1)
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    hit_rows = ((rows >= y0) & (rows < y0 + size)).to(torch.uint8)  # (N, H, 1)
    hit_cols = ((cols >= x0) & (cols < x0 + size)).to(torch.uint8)  # (N, 1, W)
    hit = (hit_rows * hit_cols).unsqueeze(1)
    # uint8 arithmetic wraps mod 256, so this is exactly ``fill`` where hit and x elsewhere
    return x + (fill - x) * hit


# --------------------------------------------------------------------------- RandAugment


def _magnitudes(policy: str, op: Tensor, level: Tensor, sign: Tensor, u: Tensor, side: int) -> Tensor:
    """Per-sample magnitude (PIL units) of the chosen op; formulas evaluated in float64 in the
    same order as the reference Python so int()/thresholds match it exactly."""
    lv = level.to(torch.float64)
    if policy == "official":  # google-research/fixmatch RandAugment ranges, level 1..9 of 10
        enh = 0.1 + 0.18 * lv
        mags = {
            "Rotate": 3 * lv * sign,
            "ShearX": 0.03 * lv * sign,
            "ShearY": 0.03 * lv * sign,
            "TranslateX": lv * (side / 32) * sign,
            "TranslateY": lv * (side / 32) * sign,
            "Solarize": 256 - torch.trunc(25.6 * lv),
            "Posterize": 4 - torch.trunc(0.4 * lv),
        }
    elif policy == "paper":  # kekmodel fixmatch_augment_pool: v * max_v / 10 + bias
        enh = lv * 0.9 / 10 + 0.05
        trans = torch.trunc(lv * 0.3 / 10 * side) * sign
        mags = {
            "Rotate": torch.trunc(lv * 30 / 10) * sign,
            "ShearX": lv * 0.3 / 10 * sign,
            "ShearY": lv * 0.3 / 10 * sign,
            "TranslateX": trans,
            "TranslateY": trans,
            "Solarize": 256 - torch.trunc(lv * 256 / 10),
            "Posterize": torch.trunc(lv * 4 / 10) + 4,
        }
    else:  # usb: min + (max - min) * uniform, ranges of USB's augment_list
        enh = 0.05 + 0.9 * u
        mags = {
            "Rotate": -30 + 60 * u,
            "ShearX": -0.3 + 0.6 * u,
            "ShearY": -0.3 + 0.6 * u,
            "TranslateX": (-0.3 + 0.6 * u) * side,
            "TranslateY": (-0.3 + 0.6 * u) * side,
            "Solarize": 256 * u,
            "Posterize": torch.trunc(4 + 4 * u).clamp(min=1),
        }
    mags.update({name: enh for name in ("Color", "Contrast", "Brightness", "Sharpness")})
    out = torch.zeros_like(lv)
    for name, v in mags.items():
        out = torch.where(_is(op, name), v, out)
    return out


def strong_augment(
    x: Tensor, *, flip: bool, generator: torch.Generator, policy: str = "official", grouped: bool | None = None
) -> Tensor:
    """weak_augment, then RandAugment (per-sample ops), then Cutout.

    official/paper: 2 ops drawn uniformly with replacement from the 14 OPS, each applied with
    p=0.5 at level randint(1..9); Cutout of side/2 (16 px at 32) filled with grey 127.
    usb: 3 ops always applied with uniform magnitudes (USB RandAugment(3, 5)); Cutout of a
    uniform size in [0, side/2).  Differences from USB: geometric fill is grey 128 (USB: black),
    cutout grey 127 centred and clipped (USB: (125,123,114), box shifted at the top/left border).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}; valid: {', '.join(POLICIES)}")
    x = weak_augment(x, flip=flip, generator=generator)
    n, _, h, w = x.shape
    dev = x.device
    for _ in range(3 if policy == "usb" else 2):
        op = torch.randint(0, len(OP_NAMES), (n,), device=dev, generator=generator)
        apply = torch.rand(n, device=dev, generator=generator) < 0.5
        level = torch.randint(1, 10, (n,), device=dev, generator=generator)
        sign = torch.where(torch.rand(n, device=dev, generator=generator) < 0.5, -1.0, 1.0)
        u = torch.rand(n, device=dev, generator=generator, dtype=torch.float64)
        if policy != "usb":
            op = torch.where(apply, op, _IDX["Identity"])
        x = _apply(x, op, _magnitudes(policy, op, level, sign.double(), u, min(h, w)), grouped)
    size: int | Tensor = min(h, w) // 2
    if policy == "usb":
        frac = torch.rand(n, device=dev, generator=generator, dtype=torch.float64) * 0.5
        size = torch.trunc(frac * min(h, w)).long()
    return cutout(x, size, generator)


def __getattr__(name: str):
    """``fixmatch.augment.CTA_OPS``: the CTAugment ops, loaded on first use (ctaugment_ops imports this module)."""
    if name == "CTA_OPS":
        from fixmatch.ctaugment_ops import CTA_OPS

        return CTA_OPS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
