"""The 19 CTAugment ops of the official code (libml/ctaugment.py ``OPS``), batched per sample on uint8
tensors (N, C, H, W), each equal to the official ``OPS[name].f`` on a PIL image bit for bit (Pillow
10-13 arithmetic: 16.16 fixed-point affine, float32 blends, float 3x3/5x5 kernels, 22-bit fixed-point
resampling, see pil_resample.py). ``fixmatch.augment.ctaugment`` holds the policy that draws them."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from fixmatch.augment.kernels import OP_INDEX as _RA_IDX
from fixmatch.augment.kernels import autocontrast_lut, equalize_lut, histogram, pil_affine, pil_grey, pil_smooth, warp
from fixmatch.augment.pil_resample import RESCALE_METHODS, resample, resize_bank

__all__ = ["BINS", "CTA_OPS", "CTA_OP_NAMES", "apply_ops"]

# The official registry in its registration order (random.choice draws from this list).
BINS: dict[str, tuple[int, ...]] = {
    "autocontrast": (17,),
    "blur": (17,),
    "brightness": (17,),
    "color": (17,),
    "contrast": (17,),
    "cutout": (17,),
    "equalize": (17,),
    "invert": (17,),
    "identity": (),
    "posterize": (8,),
    "rescale": (17, 6),
    "rotate": (17,),
    "sharpness": (17,),
    "shear_x": (17,),
    "shear_y": (17,),
    "smooth": (17,),
    "solarize": (17,),
    "translate_x": (17,),
    "translate_y": (17,),
}
CTA_OP_NAMES: tuple[str, ...] = tuple(BINS)
CTA_OP_INDEX = {name: i for i, name in enumerate(CTA_OP_NAMES)}
MAX_ARGS, MAX_BINS = 2, 17
CUTOUT_FILL = 127  # official (127, 127, 127)

_GEOM = frozenset({"rotate", "shear_x", "shear_y", "translate_x", "translate_y"})
_ENHANCE = frozenset({"brightness", "color", "contrast", "sharpness"})  # ImageEnhance, factor 0.1 + 1.9 a
_IMAGEOP = frozenset({"autocontrast", "blur", "equalize", "invert", "smooth"})  # Image.blend(x, op(x), a)
_LUT = frozenset({"autocontrast", "equalize", "invert", "posterize", "solarize"})
_PIXEL = _ENHANCE | _IMAGEOP | _LUT
# CPU groups: one affine warp for all geometric ops, every other op on its own (identity: nothing)
_GROUPS = (_GEOM, *(frozenset({n}) for n in BINS if n not in _GEOM and n != "identity"))
_GROUP_OF = torch.tensor([next((g for g, grp in enumerate(_GROUPS) if n in grp), len(_GROUPS)) for n in BINS])
_ALL = frozenset(CTA_OP_NAMES)


def _nbins_table() -> Tensor:
    t = torch.zeros(len(CTA_OP_NAMES), MAX_ARGS, dtype=torch.long)
    for name, bins in BINS.items():
        t[CTA_OP_INDEX[name], : len(bins)] = torch.tensor(bins, dtype=torch.long)
    return t


NBINS = _nbins_table()  # (19, 2): bins per op and argument, 0 where the op has no such argument


def _is(op: Tensor, names) -> Tensor:
    """(N,) bool: op is one of ``names`` (a name or a set of names)."""
    names = (names,) if isinstance(names, str) else sorted(names)
    mask = op == CTA_OP_INDEX[names[0]]
    for name in names[1:]:  # comparisons with Python ints: no host-to-device copy (CUDA-graph safe)
        mask = mask | (op == CTA_OP_INDEX[name])
    return mask


def _b(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


# --------------------------------------------------------------------------- geometry


def _geom_stage(x: Tensor, op: Tensor, a: Tensor, present: frozenset) -> Tensor:
    """rotate / shear / translate with PIL's nearest-neighbour affine and black fill (the official
    ops pass no fillcolor). Magnitudes: rotate ``int(round((2a-1)*45))`` degrees (numpy rounds half
    to even, as torch.round does); shear and translate ``(2a-1)*0.3`` *in the affine matrix*, i.e.
    a translation of at most 0.3 pixel, which PIL's nearest-neighbour lookup rounds away."""
    signed = 2 * a - 1
    mag = torch.where(_is(op, "rotate"), torch.round(signed * 45), signed * 0.3)
    ra_names = {
        "rotate": "Rotate",
        "shear_x": "ShearX",
        "shear_y": "ShearY",
        "translate_x": "TranslateX",
        "translate_y": "TranslateY",
    }
    ra_op = torch.full_like(op, _RA_IDX["Identity"])
    for name in present & _GEOM:
        ra_op = torch.where(op == CTA_OP_INDEX[name], _RA_IDX[ra_names[name]], ra_op)
    coef = pil_affine(ra_op, mag, x.shape[2], x.shape[3], frozenset(ra_names[n] for n in present & _GEOM))
    return warp(x, coef, fill=0)


def _rescale_stage(x: Tensor, op: Tensor, scale_arg: Tensor, method_arg: Tensor) -> Tensor:
    """rescale: ``x.crop((s*W, s*H, W*(1-s), H*(1-s))).resize(x.size, method)``, s = 0.25 * arg,
    crop box rounded half to even (Python round), method = methods[int(arg * 5.99)]. Horizontal pass
    first (rounded to uint8), then vertical, as Pillow does."""
    h, w = x.shape[2:]
    s = torch.where(_is(op, "rescale"), scale_arg, 0.0) * 0.25
    method = torch.trunc(method_arg * 5.99).long().clamp_(0, len(RESCALE_METHODS) - 1)
    out = x
    for axis, size in ((3, w), (2, h)):
        start = torch.round(s * size).long()
        width = torch.round(size * (1 - s)).long() - start
        mat = resize_bank(size, str(x.device))[method, width]
        out = resample(out if axis == 3 else out.transpose(2, 3), mat, start)
        out = out if axis == 3 else out.transpose(2, 3)
    return out.to(torch.uint8)


# --------------------------------------------------------------------------- pixel ops


def _blur(xf: Tensor) -> Tensor:
    """ImageFilter.BLUR (5x5 ring of ones / 16), 2-pixel border copied. The ring is the 5x5 box sum
    minus the inner 3x3 box sum; every term is a multiple of 1/16, so PIL's float32 sum is exact and
    the result is floor(S / 16 + 0.5)."""

    def box(k: int) -> Tensor:  # k x k sums centred on the interior pixels, (N, C, H-4, W-4)
        o = (5 - k) // 2
        h, w = xf.shape[2] - 4, xf.shape[3] - 4
        v = torch.stack([xf[:, :, o + i : o + i + h] for i in range(k)]).sum(0)
        return torch.stack([v[..., o + j : o + j + w] for j in range(k)]).sum(0)

    out = xf.clone()
    out[:, :, 2:-2, 2:-2] = (box(5) - box(3)).mul_(1 / 16).add_(0.5).floor_()
    return out


def _lut_images(x: Tensor, op: Tensor, a: Tensor, present: frozenset) -> Tensor:
    """autocontrast / equalize / invert / posterize / solarize of each sample (identity for other
    ops) as one per-sample, per-channel 256-entry table gather."""
    n, c, h, w = x.shape
    i = torch.arange(256, device=x.device, dtype=torch.float64).expand(n, c, 256)
    lut = i

    def sel(name: str) -> Tensor:
        return (op == CTA_OP_INDEX[name]).view(n, 1, 1)

    m = a.view(n, 1, 1)
    if present & {"autocontrast", "equalize"}:
        lo = x.amin((2, 3)).double().unsqueeze(-1)
        hi = x.amax((2, 3)).double().unsqueeze(-1)
        if "autocontrast" in present:
            lut = torch.where(sel("autocontrast"), autocontrast_lut(lo, hi, i), lut)
        if "equalize" in present:
            lut = torch.where(sel("equalize"), equalize_lut(histogram(x), lo, hi, i), lut)
    if "invert" in present:
        lut = torch.where(sel("invert"), 255 - i, lut)
    if "posterize" in present:  # bits = 1 + int(a * 7.999); keep the top `bits` bits
        drop = torch.exp2(8 - (1 + torch.trunc(m * 7.999))).long()
        lut = torch.where(sel("posterize"), torch.bitwise_and(i.long(), 256 - drop).double(), lut)
    if "solarize" in present:  # threshold int(a * 255.999): i if i < th else 255 - i
        lut = torch.where(sel("solarize"), torch.where(i < torch.trunc(m * 255.999), i, 255 - i), lut)
    return lut.to(torch.uint8).gather(2, x.reshape(n, c, h * w).long()).view(n, c, h, w)


def _pick(op: Tensor, names, present: frozenset, a, b):
    """``where(op in names, a, b)`` per sample. Every sample's op lies in ``present`` (the whole set on
    the masked path, one op group on the CPU path), so when ``present`` holds only ``names`` or none of
    them no mask is built and no full-size select runs."""
    names = frozenset(names) & present
    if not names:
        return b
    if present <= names:
        return a
    ndim = max(t.dim() for t in (a, b) if isinstance(t, Tensor))
    return torch.where(_is(op, names).view(-1, *[1] * (ndim - 1)), a, b)


def _pixel_stage(x: Tensor, op: Tensor, a: Tensor, present: frozenset) -> Tensor:
    """Every pixel op as one float32 Image.blend, ``trunc(clip(D + f * (X - D)))``:
    enhancers: D = PIL's degenerate, X = x, f = float32(0.1 + 1.9 a);
    autocontrast/blur/equalize/invert/smooth: D = x, X = op(x), f = float32(a);
    posterize/solarize: D = x, X = op(x), f = 1 (exact); any other op: f = 0 (x itself)."""
    xf = x.float()
    big = xf
    if present & _LUT:
        big = _pick(op, _LUT, present, _lut_images(x, op, a, present).float(), big)
    if "blur" in present:
        big = _pick(op, {"blur"}, present, _blur(xf), big)
    smooth = pil_smooth(xf) if present & {"smooth", "sharpness"} else None
    big = _pick(op, {"smooth"}, present, smooth, big)
    base = xf
    if present & _ENHANCE:
        deg = torch.zeros_like(xf) if "brightness" in present else None  # black
        if present & {"color", "contrast"}:
            grey = pil_grey(xf)
            deg = _pick(op, {"color"}, present, grey.expand_as(xf), deg)
            if "contrast" in present:  # int(mean + 0.5), exactly: floor((2 * sum + npix) / (2 * npix))
                total, npix = grey.sum((1, 2, 3), dtype=torch.float64), grey[0].numel()
                mean = torch.floor((2 * total + npix) / (2 * npix)).float()
                deg = _pick(op, {"contrast"}, present, _b(mean).expand_as(xf), deg)
        deg = _pick(op, {"sharpness"}, present, smooth, deg)
        base = _pick(op, _ENHANCE, present, deg, xf)
        big = _pick(op, _ENHANCE, present, xf, big)
    f = torch.zeros_like(a)
    f = _pick(op, _ENHANCE, present, 0.1 + 1.9 * a, f)
    f = _pick(op, _IMAGEOP, present, a, f)
    f = _pick(op, {"posterize", "solarize"}, present, torch.ones_like(a), f)
    out = torch.sub(big, base).mul_(_b(f.float())).add_(base)
    return out.clamp_(0, 255).to(torch.uint8)


def cutout_stage(x: Tensor, op: Tensor, a: Tensor, cy: Tensor, cx: Tensor) -> Tensor:
    """cutout(level): size = 1 + int(level * min(W, H) * 0.499); rows [cy - size//2, cy + size//2)
    and columns [cx - size//2, cx + size//2), clipped, set to grey 127 (an even side: size//2 * 2)."""
    n, _, h, w = x.shape
    size = 1 + torch.trunc(a * min(h, w) * 0.499).long()
    half = torch.where(_is(op, "cutout"), size // 2, 0).view(n, 1, 1)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    cy, cx = cy.view(n, 1, 1), cx.view(n, 1, 1)
    hit = ((rows >= cy - half) & (rows < cy + half)) & ((cols >= cx - half) & (cols < cx + half))
    return x + (CUTOUT_FILL - x) * hit.unsqueeze(1).to(torch.uint8)  # uint8 wraps: exactly the fill


# --------------------------------------------------------------------------- one op per sample


def _apply_masked(x: Tensor, op: Tensor, args: Tensor, cy: Tensor, cx: Tensor, present: frozenset = _ALL) -> Tensor:
    """op[k] with arguments args[k] (N, 2) on image k, the whole batch through every stage present
    (other samples get neutral parameters, which are exact): fixed shapes, no host sync."""
    a = args[:, 0]
    if present & _GEOM:
        x = _geom_stage(x, op, a, present)
    if "rescale" in present:
        x = _rescale_stage(x, op, a, args[:, 1])
    if present & _PIXEL:
        x = _pixel_stage(x, op, a, present)
    if "cutout" in present:
        x = cutout_stage(x, op, a, cy, cx)
    return x


def _apply_grouped(x: Tensor, op: Tensor, args: Tensor, cy: Tensor, cx: Tensor) -> Tensor:
    """Same result; each op group only on its own samples, computing only what it needs. The batch
    is sorted by group once, so every group is a slice (no per-group gathers); the group sizes are
    read on the host (free on CPU only)."""
    gid = _GROUP_OF.to(op.device)[op]
    order = torch.argsort(gid, stable=True)
    counts = torch.bincount(gid, minlength=len(_GROUPS) + 1).tolist()
    xs, ops, a, cys, cxs = x[order], op[order], args[order], cy[order], cx[order]
    start = 0
    for group, count in zip(_GROUPS, counts):  # the identity group comes last and is left as it is
        if count:
            part = slice(start, start + count)
            xs[part] = _apply_masked(xs[part], ops[part], a[part], cys[part], cxs[part], group)
        start += count
    out = torch.empty_like(x)
    out[order] = xs
    return out


def apply_ops(
    x: Tensor, ops: Tensor, args: Tensor, generator: torch.Generator | None = None, grouped: bool | None = None
) -> Tensor:
    """Apply a policy: ops (N, depth) long, args (N, depth, 2) float64, slot after slot, like the
    official ``apply``. The cutout centres are drawn for every sample and slot (a fixed stream)."""
    n, _, h, w = x.shape
    grouped = x.device.type == "cpu" if grouped is None else grouped
    for s in range(ops.shape[1]):
        cx = torch.randint(0, w, (n,), device=x.device, generator=generator)
        cy = torch.randint(0, h, (n,), device=x.device, generator=generator)
        apply = _apply_grouped if grouped else _apply_masked
        x = apply(x, ops[:, s], args[:, s].to(torch.float64), cy, cx)
    return x


def _make_op(name: str) -> Callable[..., Tensor]:
    nargs = len(BINS[name])

    def op(x: Tensor, *args: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if len(args) != nargs:
            raise TypeError(f"{name} takes {nargs} argument(s), got {len(args)}")
        n = x.shape[0]
        full = torch.zeros(n, 1, MAX_ARGS, dtype=torch.float64, device=x.device)
        for j, v in enumerate(args):
            full[:, 0, j] = torch.as_tensor(v, dtype=torch.float64, device=x.device).expand(n)
        ops = torch.full((n, 1), CTA_OP_INDEX[name], device=x.device)
        return apply_ops(x, ops, full, generator, grouped=False)

    op.__name__ = name
    op.__doc__ = f"{name}(x uint8 (N,C,H,W), {nargs} argument(s) (N,) in [0, 1]) == official OPS[{name!r}].f"
    return op


CTA_OPS: dict[str, Callable[..., Tensor]] = {name: _make_op(name) for name in CTA_OP_NAMES}
