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

from typing import Callable

import torch
from torch import Tensor

from fixmatch.augment.kernels import (
    GEOM,
    OP_INDEX,
    OP_NAMES,
    autocontrast_lut,
    bshape,
    equalize_lut,
    histogram,
    is_op,
    pil_affine,
    pil_grey,
    pil_smooth,
    warp,
)
from fixmatch.augment.weak import weak_augment

__all__ = ["OPS", "POLICIES", "strong_augment", "cutout"]

_BLEND = frozenset({"Color", "Contrast", "Brightness", "Sharpness"})
_LUT = frozenset({"AutoContrast", "Equalize", "Solarize", "Posterize"})
_ALL = frozenset(OP_NAMES)

POLICIES: tuple[str, ...] = ("official", "paper", "usb")
CUTOUT_FILL = 127  # official FixMatch cutout grey


# --------------------------------------------------------------------------- geometry


# --------------------------------------------------------------------------- blends


def _blend_stage(x: Tensor, op: Tensor, mag: Tensor, present: frozenset) -> Tensor:
    """ImageEnhance.X(img).enhance(f) == Image.blend(degenerate, img, f) for each sample.

    Image.blend computes ``trunc(clip(D + f * (x - D), 0, 255))`` in float32 with f cast
    to float32; samples with another op use f = 1, which returns x exactly.  Degenerates:
    Brightness black, Contrast the grey mean, Color the grey image, Sharpness SMOOTH.
    """
    n = x.shape[0]
    xf = x.float()
    grey = pil_grey(xf) if present & {"Color", "Contrast"} else xf[:, :1]  # the fallback is never read
    deg = torch.zeros(n, device=x.device)
    if "Contrast" in present:  # int(mean + 0.5) exactly: floor((2 * sum + npix) / (2 * npix))
        total, npix = grey.sum((1, 2, 3), dtype=torch.float64), grey[0].numel()
        mean = torch.floor((2 * total + npix) / (2 * npix))  # sums < 2**53: exact
        deg = torch.where(is_op(op, "Contrast"), mean.float(), deg)
    deg = bshape(deg)
    if "Color" in present:
        deg = deg + bshape(is_op(op, "Color").float()) * grey
    if "Sharpness" in present:
        deg = deg + bshape(is_op(op, "Sharpness").float()) * pil_smooth(xf)
    sel = is_op(op, "Color") | is_op(op, "Contrast") | is_op(op, "Brightness") | is_op(op, "Sharpness")
    f = bshape(torch.where(sel, mag.float(), 1.0))
    out = xf.sub_(deg).mul_(f).add_(deg)
    return out.clamp_(0, 255).to(torch.uint8)  # float -> uint8 truncates like PIL's cast


# --------------------------------------------------------------------------- lookup tables


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
            lut = torch.where(is_op(op, "AutoContrast").view(n, 1, 1), autocontrast_lut(lo, hi, i), lut)
        if "Equalize" in present:
            eq = equalize_lut(histogram(x), lo, hi, i)
            lut = torch.where(is_op(op, "Equalize").view(n, 1, 1), eq, lut)
    if "Solarize" in present:  # ImageOps.solarize: i if i < threshold else 255 - i
        lut = torch.where(is_op(op, "Solarize").view(n, 1, 1), torch.where(i < m, i, 255 - i), lut)
    if "Posterize" in present:  # ImageOps.posterize: i & ~(2 ** (8 - bits) - 1)
        drop = torch.exp2(8 - torch.trunc(m)).long()
        post = torch.bitwise_and(i.long(), 256 - drop).double()
        lut = torch.where(is_op(op, "Posterize").view(n, 1, 1), post, lut)
    lut = lut.to(torch.uint8)
    return lut.gather(2, x.reshape(n, c, h * w).long()).view(n, c, h, w)


# --------------------------------------------------------------------------- ops


def _apply_masked(x: Tensor, op: Tensor, mag: Tensor, present: frozenset = _ALL) -> Tensor:
    """Apply op[k] with magnitude mag[k] to image k, whole batch through every stage (samples
    of other stages get neutral parameters): fixed shapes, no host sync.  ``present`` is a
    static set of the ops that may occur; stages and branches for absent ops are skipped."""
    if present & GEOM:
        x = warp(x, pil_affine(op, mag, x.shape[2], x.shape[3], present))
    if present & _BLEND:
        x = _blend_stage(x, op, mag, present)
    if present & _LUT:
        x = _lut_stage(x, op, mag, present)
    return x


def _apply_grouped(x: Tensor, op: Tensor, mag: Tensor) -> Tensor:
    """Same result as ``_apply_masked``, but each stage runs only on the samples whose op
    belongs to it.  Uses data-dependent shapes (nonzero): free on CPU, a sync on a GPU."""
    out = x.clone()
    for stage in (GEOM, _BLEND, _LUT):
        ids = torch.tensor([OP_INDEX[name] for name in stage], device=x.device)
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
        idx = torch.full((images.shape[0],), OP_INDEX[name], device=images.device)
        mag = torch.as_tensor(magnitude, device=images.device).expand(images.shape[0])
        return _apply_masked(images, idx, mag, frozenset({name}))

    op.__name__ = name
    op.__doc__ = f"{name}(images uint8 (N,C,H,W), magnitude (N,)) in PIL units, like PIL."
    return op


OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {name: _make_op(name) for name in OP_NAMES}


# --------------------------------------------------------------------------- views


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
        out = torch.where(is_op(op, name), v, out)
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
            op = torch.where(apply, op, OP_INDEX["Identity"])
        x = _apply(x, op, _magnitudes(policy, op, level, sign.double(), u, min(h, w)), grouped)
    size: int | Tensor = min(h, w) // 2
    if policy == "usb":
        frac = torch.rand(n, device=dev, generator=generator, dtype=torch.float64) * 0.5
        size = torch.trunc(frac * min(h, w)).long()
    return cutout(x, size, generator)
