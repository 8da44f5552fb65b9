"""The augmentation op table RandAugment and CTAugment share, and the PIL-exact kernels it is built on.

One vocabulary of ops (``OP_ARGS``: each op's arguments, in PIL units), each applied once per sample
on uint8 tensors (N, C, H, W) in batched stages: an affine warp with a fill, a rescale, a float32
blend (against a degenerate image, or with the op's own image), the lookup tables of the point ops,
and a cutout. A policy draws ops from its own list of table names (``names``: ``op[k]`` indexes it,
so a policy's draws keep their order) and turns its magnitudes into the table's arguments (its
magnitude map: randaugment.py, ctaugment.py). One dispatch: off the CPU every sample goes through
every stage present (samples of other stages get neutral parameters, which are exact: fixed shapes,
no host sync); on the CPU each op group runs only on its own samples. Each kernel is restated from
Pillow's C code in its docstring; the ops equal PIL bit for bit (tests/augment/test_augment.py,
tests/augment/test_ctaugment.py).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from fixmatch.augment.pil_resample import RESCALE_METHODS, resample, resize_bank

# The op table: each op and its arguments (the columns of ``args``) in PIL units. ``f`` is a blend
# factor: ImageEnhance's for the four enhancers, ``Image.blend(x, op(x), f)`` for the image ops (1:
# the op itself).
OP_ARGS: dict[str, tuple[str, ...]] = {
    "identity": (),
    "autocontrast": ("f",),  # ImageOps.autocontrast
    "equalize": ("f",),  # ImageOps.equalize
    "invert": ("f",),  # ImageOps.invert
    "blur": ("f",),  # ImageFilter.BLUR
    "smooth": ("f",),  # ImageFilter.SMOOTH
    "posterize": ("bits",),  # ImageOps.posterize(x, bits)
    "solarize": ("threshold",),  # ImageOps.solarize(x, threshold)
    "brightness": ("f",),  # ImageEnhance.Brightness(x).enhance(f)
    "color": ("f",),
    "contrast": ("f",),
    "sharpness": ("f",),
    "rotate": ("degrees",),  # Image.rotate(degrees, fillcolor=fill)
    "shear_x": ("shear",),  # transform(AFFINE, (1, shear, 0, 0, 1, 0), fillcolor=fill)
    "shear_y": ("shear",),
    "translate_x": ("pixels",),  # transform(AFFINE, (1, 0, pixels, 0, 1, 0), fillcolor=fill)
    "translate_y": ("pixels",),
    "rescale": ("crop", "method"),  # crop `crop` x the side off each edge, resize back: RESCALE_METHODS[method]
    "cutout": ("side", "cy", "cx"),  # a side x side square at row cy - side//2, column cx - side//2
}
OP_NAMES = tuple(OP_ARGS)
AFFINE = frozenset({"rotate", "shear_x", "shear_y", "translate_x", "translate_y"})
ENHANCE = frozenset({"brightness", "color", "contrast", "sharpness"})  # blend against PIL's degenerate
IMAGE_OPS = frozenset({"autocontrast", "blur", "equalize", "invert", "smooth"})  # blend with the op's image
LUT = frozenset({"autocontrast", "equalize", "invert", "posterize", "solarize"})  # one table gather
PIXEL = ENHANCE | IMAGE_OPS | LUT
CUTOUT_FILL = 127  # official FixMatch cutout grey (RandAugment and CTAugment alike)


def is_op(op: Tensor, names: tuple[str, ...], which: str | frozenset) -> Tensor:
    """(N,) bool: op[k], an index into the vocabulary ``names``, is ``which`` (a name or a set of them).
    Python ints only, no host-to-device copy (CUDA-graph safe); a set is one bit test of 1 << op
    against its members' bits (three kernels however many members)."""
    ids = [names.index(w) for w in ((which,) if isinstance(which, str) else which) if w in names]
    if len(ids) == 1:
        return op == ids[0]
    return ((1 << op) & sum(1 << i for i in ids)) != 0


def bshape(v: Tensor) -> Tensor:
    """(N,) -> (N, 1, 1, 1) for per-sample broadcasting over images."""
    return v.view(-1, 1, 1, 1)


# --------------------------------------------------------------------------- PIL's kernels


def pil_affine(op: Tensor, mag: Tensor, h: int, w: int, names: tuple[str, ...], present: frozenset) -> Tensor:
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
        "rotate": rot,
        "shear_x": (one, m, zero, zero, one, zero),
        "shear_y": (one, zero, zero, m, one, zero),
        "translate_x": (one, zero, m, zero, one, zero),
        "translate_y": (one, zero, zero, zero, one, m),
    }
    coef = torch.stack((one, zero, zero, zero, one, zero), 1)
    for name, c in table.items():
        if name in present:
            coef = torch.where(is_op(op, names, name)[:, None], torch.stack(c, 1), coef)
    return coef


def fix(v: Tensor) -> Tensor:
    """PIL's 16.16 fixed point: FLOOR(v * 65536 + 0.5)."""
    return torch.floor(v * 65536.0 + 0.5)


def warp(x: Tensor, coef: Tensor, fill: int) -> Tensor:
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


def pil_blur(xf: Tensor) -> Tensor:
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


def cutout_at(x: Tensor, cy: Tensor, cx: Tensor, side: Tensor, fill: int = CUTOUT_FILL) -> Tensor:
    """Fill rows [cy - side//2, cy - side//2 + side) x the same columns around cx (per sample, long
    (N,) tensors; side 0: nothing), clipped at the borders, with grey ``fill``."""
    n, _, h, w = x.shape
    y0, x0, side = (cy - side // 2).view(n, 1, 1), (cx - side // 2).view(n, 1, 1), side.view(n, 1, 1)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    hit = ((rows >= y0) & (rows < y0 + side)) & ((cols >= x0) & (cols < x0 + side))
    return x + (fill - x) * hit.unsqueeze(1).to(torch.uint8)  # uint8 wraps mod 256: exactly the fill


# --------------------------------------------------------------------------- the stages


def _pick(op: Tensor, names: tuple[str, ...], which: frozenset, present: frozenset, a, b):
    """``where(op in which, a, b)`` per sample. Every sample's op lies in ``present`` (the whole
    vocabulary on the masked path, one op group on the CPU path), so when ``present`` holds only ops of
    ``which`` or none of them no mask is built and no full-size select runs."""
    which = which & present
    if not which:
        return b
    if present <= which:
        return a
    ndim = max(t.dim() for t in (a, b) if isinstance(t, Tensor))
    return torch.where(is_op(op, names, which).view(-1, *[1] * (ndim - 1)), a, b)


def _rescale(x: Tensor, op: Tensor, args: Tensor, names: tuple[str, ...], present: frozenset) -> Tensor:
    """rescale: ``x.crop((s*W, s*H, W*(1-s), H*(1-s))).resize(x.size, method)``, the crop box rounded
    half to even (Python round). Horizontal pass first (rounded to uint8), then vertical, as Pillow does.
    Other samples: s = 0, whose resize is the identity."""
    h, w = x.shape[2:]
    s = _pick(op, names, frozenset({"rescale"}), present, args[:, 0], torch.zeros_like(args[:, 0]))
    method = args[:, 1].long().clamp_(0, len(RESCALE_METHODS) - 1)
    out = x
    for axis, size in ((3, w), (2, h)):
        start = torch.round(s * size).long()
        width = torch.round(size * (1 - s)).long() - start
        mat = resize_bank(size, str(x.device))[method, width]
        out = resample(out if axis == 3 else out.transpose(2, 3), mat, start)
        out = out if axis == 3 else out.transpose(2, 3)
    return out.to(torch.uint8)


def _lut_images(x: Tensor, op: Tensor, a: Tensor, names: tuple[str, ...], present: frozenset) -> Tensor:
    """autocontrast / equalize / invert / posterize / solarize of each sample (identity for other ops)
    as one per-sample, per-channel 256-entry table gather."""
    n, c, h, w = x.shape
    i = torch.arange(256, device=x.device, dtype=torch.float64).expand(n, c, 256)
    lut = i

    def sel(name: str) -> Tensor:
        return is_op(op, names, name).view(n, 1, 1)

    m = a.view(n, 1, 1)
    if present & {"autocontrast", "equalize"}:
        lo = x.amin((2, 3)).double().unsqueeze(-1)  # lowest / highest value present, (N, C, 1)
        hi = x.amax((2, 3)).double().unsqueeze(-1)
        if "autocontrast" in present:
            lut = torch.where(sel("autocontrast"), autocontrast_lut(lo, hi, i), lut)
        if "equalize" in present:
            lut = torch.where(sel("equalize"), equalize_lut(histogram(x), lo, hi, i), lut)
    if "invert" in present:
        lut = torch.where(sel("invert"), 255 - i, lut)
    if "posterize" in present:  # keep the top `bits` bits: i & ~(2 ** (8 - bits) - 1)
        drop = torch.exp2(8 - torch.trunc(m)).long()
        lut = torch.where(sel("posterize"), torch.bitwise_and(i.long(), 256 - drop).double(), lut)
    if "solarize" in present:  # i if i < threshold else 255 - i
        lut = torch.where(sel("solarize"), torch.where(i < m, i, 255 - i), lut)
    return lut.to(torch.uint8).gather(2, x.reshape(n, c, h * w).long()).view(n, c, h, w)


def _pixel(x: Tensor, op: Tensor, a: Tensor, names: tuple[str, ...], present: frozenset) -> Tensor:
    """Every pixel op as one float32 Image.blend, ``trunc(clip(D + f * (X - D)))`` with f cast to float32:
    enhancers: D = PIL's degenerate (Brightness black, Contrast the grey mean, Color the grey image,
    Sharpness SMOOTH), X = x; image ops: D = x, X = op(x), f = a; posterize/solarize: D = x, X = op(x),
    f = 1 (exact); any other op: f = 0 (x itself)."""
    xf = x.float()
    big = xf
    if present & LUT:
        big = _pick(op, names, LUT, present, _lut_images(x, op, a, names, present).float(), big)
    if "blur" in present:
        big = _pick(op, names, frozenset({"blur"}), present, pil_blur(xf), big)
    smooth = pil_smooth(xf) if present & {"smooth", "sharpness"} else None
    big = _pick(op, names, frozenset({"smooth"}), present, smooth, big)
    base = xf
    if present & ENHANCE:  # the degenerate broadcasts over the channels (and pixels) where it can
        deg = xf.new_zeros(len(xf), 1, 1, 1)  # black
        if present & {"color", "contrast"}:
            grey = pil_grey(xf)
            deg = _pick(op, names, frozenset({"color"}), present, grey, deg)
            if "contrast" in present:  # int(mean + 0.5), exactly: floor((2 * sum + npix) / (2 * npix))
                total, npix = grey.sum((1, 2, 3), dtype=torch.float64), grey[0].numel()
                mean = torch.floor((2 * total + npix) / (2 * npix)).float()  # sums < 2**53: exact
                deg = _pick(op, names, frozenset({"contrast"}), present, bshape(mean), deg)
        deg = _pick(op, names, frozenset({"sharpness"}), present, smooth, deg)
        base = _pick(op, names, ENHANCE, present, deg, xf)
        big = _pick(op, names, ENHANCE, present, xf, big)
    f = _pick(op, names, ENHANCE | IMAGE_OPS, present, a, torch.zeros_like(a))
    f = _pick(op, names, frozenset({"posterize", "solarize"}), present, torch.ones_like(a), f)
    out = torch.sub(big, base).mul_(bshape(f.float())).add_(base)
    return out.clamp_(0, 255).to(torch.uint8)  # float -> uint8 truncates like PIL's cast


# --------------------------------------------------------------------------- one op per sample


def _apply_masked(
    x: Tensor, op: Tensor, args: Tensor, names: tuple[str, ...], fill: int, present: frozenset | None = None
) -> Tensor:
    """op[k] (an index into ``names``) with arguments args[k] on image k, the whole batch through every
    stage present (samples of other stages get neutral parameters, which are exact): fixed shapes, no
    host sync. ``present``: the ops that may occur (default all of ``names``); absent stages are skipped."""
    present = frozenset(names) if present is None else present
    if present & AFFINE:
        x = warp(x, pil_affine(op, args[:, 0], x.shape[2], x.shape[3], names, present), fill)
    if "rescale" in present:
        x = _rescale(x, op, args, names, present)
    if present & PIXEL:
        x = _pixel(x, op, args[:, 0], names, present)
    if "cutout" in present:
        side = _pick(op, names, frozenset({"cutout"}), present, args[:, 0], torch.zeros_like(args[:, 0]))
        x = cutout_at(x, args[:, 1].long(), args[:, 2].long(), side.long())
    return x


@functools.lru_cache(maxsize=8)
def _vocabulary(names: tuple[str, ...]) -> tuple[tuple[frozenset, ...], Tensor, int]:
    """A policy's list of table ops, checked (each a table op, once): the CPU path's op groups (one
    affine warp for all geometric ops, every other op on its own, identity, left as it is, last), each
    op's group (len(names),), and how many argument columns its ops read."""
    unknown = [n for n in names if n not in OP_ARGS]
    if unknown or len(set(names)) < len(names):
        raise ValueError(
            f"ops not in the op table or named twice: {unknown or names}; the table: {', '.join(OP_NAMES)}"
        )
    groups = (AFFINE & set(names), *(frozenset({n}) for n in names if n not in AFFINE and n != "identity"))
    groups = tuple(g for g in groups if g)
    group_of = [next((g for g, grp in enumerate(groups) if n in grp), len(groups)) for n in names]
    return groups, torch.tensor(group_of), max(len(OP_ARGS[n]) for n in names)


def _apply_grouped(x: Tensor, op: Tensor, args: Tensor, names: tuple[str, ...], fill: int) -> Tensor:
    """Same result as ``_apply_masked``; each op group only on its own samples, computing only what it
    needs. The batch is sorted by group once, so every group is a slice; the group sizes are read on the
    host (free on the CPU only)."""
    groups, group_of, _ = _vocabulary(names)
    gid = group_of.to(op.device)[op]
    order = torch.argsort(gid, stable=True)
    counts = torch.bincount(gid, minlength=len(groups) + 1).tolist()
    xs, ops, a = x[order], op[order], args[order]
    start = 0
    for group, count in zip(groups, counts):  # the identity group comes last and is left as it is
        if count:
            part = slice(start, start + count)
            xs[part] = _apply_masked(xs[part], ops[part], a[part], names, fill, group)
        start += count
    out = torch.empty_like(x)
    out[order] = xs
    return out


def apply(
    x: Tensor, op: Tensor, args: Tensor, names: tuple[str, ...], *, fill: int, grouped: bool | None = None
) -> Tensor:
    """One op per sample: op (N,) long indexes ``names`` (a policy's list of table ops), args (N, k)
    float64 its arguments in PIL units (``OP_ARGS``; columns an op does not use are ignored), ``fill``
    the geometric ops' grey. Grouped on CPU (less work), masked elsewhere (no host syncs)."""
    width = _vocabulary(names)[2]
    if args.dim() != 2 or args.shape[1] < width:
        raise ValueError(f"args must be (N, k >= {width}) for the ops {names}, got {tuple(args.shape)}")
    if grouped if grouped is not None else x.device.type == "cpu":
        return _apply_grouped(x, op, args, names, fill)
    return _apply_masked(x, op, args, names, fill)
