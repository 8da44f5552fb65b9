"""RandAugment and Cutout, batched and per-sample-randomized, on uint8 tensors (N, C, H, W): the
policy (which ops a slot draws, and how often) and its magnitude maps (the official, paper and USB
levels -> the op table's arguments in PIL units); the ops themselves are the shared op table's
(kernels.py), each equal to its PIL counterpart (Pillow 10-13) bit for bit.

The same code runs on CPU and CUDA.  All randomness comes from a ``torch.Generator`` on
the images' device, so results are reproducible and resumable.  On a GPU nothing inside
syncs with the host (no ``.item()``, no data-dependent shapes), so it never waits for the CPU.

Geometric ops fill the uncovered area with grey 128: the official code works on RGBA images whose
uncovered pixels are transparent and become 0 in its [-1, 1] space, i.e. grey 127.5, which uint8
cannot hold.  AutoContrast and Equalize are the table's ops at full strength (blend factor 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fixmatch.augment.kernels import CUTOUT_FILL, apply, cutout_at, is_op
from fixmatch.augment.weak import weak_augment

__all__ = ["POLICIES", "RA_OP_NAMES", "strong_augment", "cutout"]

# RandAugment's ops, names from the op table (kernels.py), in the order a slot draws them from
RA_OP_NAMES: tuple[str, ...] = (
    "identity",
    "autocontrast",
    "equalize",
    "rotate",
    "solarize",
    "color",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "translate_x",
    "translate_y",
    "posterize",
    "shear_y",
)
POLICIES: tuple[str, ...] = ("official", "paper", "usb")
GEOM_FILL = 128  # official: 127.5 (0 in [-1, 1]); the nearest uint8 above it
_FULL = frozenset({"autocontrast", "equalize"})  # applied whole: the table's blend factor 1


def _apply(x: Tensor, op: Tensor, mag: Tensor, grouped: bool | None = None) -> Tensor:
    """One slot: op[k] (an index into RA_OP_NAMES) at magnitude mag[k] (PIL units) on image k, through
    the op table with grey fill; autocontrast and equalize take no magnitude (the whole op)."""
    f = torch.where(is_op(op, RA_OP_NAMES, _FULL), 1.0, mag.to(torch.float64))
    return apply(x, op, f.unsqueeze(1), RA_OP_NAMES, fill=GEOM_FILL, grouped=grouped)


def cutout(x: Tensor, size: int | Tensor, generator: torch.Generator, fill: int = CUTOUT_FILL) -> Tensor:
    """Fill one ``size`` x ``size`` square per image (``size`` an int or a per-sample (N,)
    tensor) with grey; centre uniform over the image pixels, square clipped at the borders."""
    n, _, h, w = x.shape
    dev = x.device
    cy = torch.randint(0, h, (n,), device=dev, generator=generator)
    cx = torch.randint(0, w, (n,), device=dev, generator=generator)
    size = torch.full((n,), size, device=dev) if isinstance(size, int) else size.to(dev)
    return cutout_at(x, cy, cx, size, fill)


# --------------------------------------------------------------------------- the magnitude maps


def _magnitudes(policy: str, op: Tensor, level: Tensor, sign: Tensor, u: Tensor, side: int) -> Tensor:
    """Per-sample magnitude (PIL units) of the chosen op; formulas evaluated in float64 in the
    same order as the reference Python so int()/thresholds match it exactly."""
    lv = level.to(torch.float64)
    if policy == "official":  # google-research/fixmatch RandAugment ranges, level 1..9 of 10
        enh = 0.1 + 0.18 * lv
        mags = {
            "rotate": 3 * lv * sign,
            "shear_x": 0.03 * lv * sign,
            "shear_y": 0.03 * lv * sign,
            "translate_x": lv * (side / 32) * sign,
            "translate_y": lv * (side / 32) * sign,
            "solarize": 256 - torch.trunc(25.6 * lv),
            "posterize": 4 - torch.trunc(0.4 * lv),
        }
    elif policy == "paper":  # kekmodel fixmatch_augment_pool: v * max_v / 10 + bias
        enh = lv * 0.9 / 10 + 0.05
        trans = torch.trunc(lv * 0.3 / 10 * side) * sign
        mags = {
            "rotate": torch.trunc(lv * 30 / 10) * sign,
            "shear_x": lv * 0.3 / 10 * sign,
            "shear_y": lv * 0.3 / 10 * sign,
            "translate_x": trans,
            "translate_y": trans,
            "solarize": 256 - torch.trunc(lv * 256 / 10),
            "posterize": torch.trunc(lv * 4 / 10) + 4,
        }
    else:  # usb: min + (max - min) * uniform, ranges of USB's augment_list
        enh = 0.05 + 0.9 * u
        mags = {
            "rotate": -30 + 60 * u,
            "shear_x": -0.3 + 0.6 * u,
            "shear_y": -0.3 + 0.6 * u,
            "translate_x": (-0.3 + 0.6 * u) * side,
            "translate_y": (-0.3 + 0.6 * u) * side,
            "solarize": 256 * u,
            "posterize": torch.trunc(4 + 4 * u).clamp(min=1),
        }
    mags.update({name: enh for name in ("color", "contrast", "brightness", "sharpness")})
    out = torch.zeros_like(lv)
    for name, v in mags.items():
        out = torch.where(is_op(op, RA_OP_NAMES, name), v, out)
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
        op = torch.randint(0, len(RA_OP_NAMES), (n,), device=dev, generator=generator)
        applied = torch.rand(n, device=dev, generator=generator) < 0.5
        level = torch.randint(1, 10, (n,), device=dev, generator=generator)
        sign = torch.where(torch.rand(n, device=dev, generator=generator) < 0.5, -1.0, 1.0)
        u = torch.rand(n, device=dev, generator=generator, dtype=torch.float64)
        if policy != "usb":
            op = torch.where(applied, op, RA_OP_NAMES.index("identity"))
        x = _apply(x, op, _magnitudes(policy, op, level, sign.double(), u, min(h, w)), grouped)
    size: int | Tensor = min(h, w) // 2
    if policy == "usb":
        frac = torch.rand(n, device=dev, generator=generator, dtype=torch.float64) * 0.5
        size = torch.trunc(frac * min(h, w)).long()
    return cutout(x, size, generator)
