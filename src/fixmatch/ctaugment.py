"""CTAugment (control-theory augmentation, ReMixMatch/FixMatch) on uint8 tensors (N, C, H, W).

What the official code (google-research/fixmatch, libml/ctaugment.py + cta/lib/train.py +
fixmatch.py) does, and this module reproduces:

* 19 ops (18 with arguments, plus identity). Each argument lies in [0, 1] and is split into bins
  (17; posterize 8; rescale 17 and 6). A strong view draws ``depth`` = 2 ops uniformly, each
  argument's bin with probability from that bin's rate, a uniform position inside the bin, and ends
  with the cutout op at level 1.
* Probes: every labeled image is also augmented with uniform random arguments; the EMA model's
  prediction p on it gives ``proximity = 1 - 0.5 * |p - onehot(y)|_1`` and each (op, argument, bin)
  the probe used moves ``rate <- decay * rate + (1 - decay) * proximity``.

Read from the official code: FixMatch constructs CTAugment with ``--ath`` (default 0.80), so 0.80 is
the threshold in force, not the class default 0.85. The strong view is CTA on the *second*
independent TF weak view (flip + reflect shift) of the pair the unlabeled pipeline makes, the weak
view being the first. The probe prediction is ``classify_op``: the EMA getter, ``training=False``,
run in the same ``session.run`` as ``train_op`` with no control dependency between them; the EMA
assignment waits for the gradient step, and the probe forward (64 images, inference) is ordinarily
done long before, so it reads the EMA weights from before the step's update (formally a race). Here:
the EMA model in eval mode, before the step's update.

Every op equals the official ``OPS[name].f`` on a PIL image bit for bit (Pillow 10-13 arithmetic:
16.16 fixed-point affine, float32 blends, float 3x3/5x5 kernels, 22-bit fixed-point resampling
coefficients), per sample and batched; the rates live on the device and are updated there without
a host sync, so a CUDA graph can capture the sampling (the rates tensor is updated in place).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from fixmatch.augment import _IDX as _RA_IDX
from fixmatch.augment import (
    _autocontrast_lut,
    _equalize_lut,
    _grey,
    _histogram,
    _pil_affine,
    _smooth,
    _warp,
    weak_augment,
)

__all__ = ["CTA_OPS", "CTA_OP_NAMES", "CTAugment", "proximity"]

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
_IDX = {name: i for i, name in enumerate(CTA_OP_NAMES)}
MAX_ARGS, MAX_BINS = 2, 17
CUTOUT_FILL = 127  # official (127, 127, 127)
RESCALE_METHODS = ("lanczos", "bicubic", "bilinear", "box", "hamming", "nearest")  # ANTIALIAS == LANCZOS

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
        t[_IDX[name], : len(bins)] = torch.tensor(bins, dtype=torch.long)
    return t


NBINS = _nbins_table()  # (19, 2): bins per op and argument, 0 where the op has no such argument


def _is(op: Tensor, names) -> Tensor:
    """(N,) bool: op is one of ``names`` (a name or a set of names)."""
    names = (names,) if isinstance(names, str) else sorted(names)
    mask = op == _IDX[names[0]]
    for name in names[1:]:  # comparisons with Python ints: no host-to-device copy (CUDA-graph safe)
        mask = mask | (op == _IDX[name])
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
        ra_op = torch.where(op == _IDX[name], _RA_IDX[ra_names[name]], ra_op)
    coef = _pil_affine(ra_op, mag, x.shape[2], x.shape[3], frozenset(ra_names[n] for n in present & _GEOM))
    return _warp(x, coef, fill=0)


# --------------------------------------------------------------------------- rescale


def _box(x: float) -> float:
    return 1.0 if -0.5 < x <= 0.5 else 0.0


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


_F054, _F046 = float(torch.tensor(0.54)), float(torch.tensor(0.46))  # Pillow's 0.54f, 0.46f


def _hamming(x: float) -> float:
    x = abs(x)
    if x == 0.0:
        return 1.0
    if x >= 1.0:
        return 0.0
    x = x * math.pi
    return math.sin(x) / x * (_F054 + _F046 * math.cos(x))


def _bicubic(x: float) -> float:
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


_FILTERS = {
    "lanczos": (_lanczos, 3.0),
    "bicubic": (_bicubic, 2.0),
    "bilinear": (_bilinear, 1.0),
    "box": (_box, 0.5),
    "hamming": (_hamming, 1.0),
}
_PRECISION_BITS = 22  # Pillow Resample.c: 32 - 8 - 2


def _resize_rows(in_size: int, out_size: int, method: str) -> list[list[int]]:
    """Pillow's 8-bit resampling coefficients for in_size -> out_size as dense integer rows, computed
    with Python floats (C doubles, the same libm) in Resample.c's order: precompute_coeffs, then
    normalize_coeffs_8bpc. NEAREST goes through ImagingScaleAffine instead (running sum of in/out)."""
    rows = [[0] * in_size for _ in range(out_size)]
    one = 1 << _PRECISION_BITS
    if method == "nearest":
        step = in_size / out_size
        xo = step * 0.5
        for xx in range(out_size):
            rows[xx][int(xo)] = one
            xo += step
        return rows
    filt, support = _FILTERS[method]
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
def _resize_bank(size: int, device: str) -> Tensor:
    """(6, size + 1, size, size) float64: [method, w] resizes a crop of width w (its first w columns)
    back to ``size``; integer coefficients scaled by 2**22. w == size is the identity (PIL copies)."""
    bank = torch.zeros(len(RESCALE_METHODS), size + 1, size, size, dtype=torch.float64)
    for m, method in enumerate(RESCALE_METHODS):
        for w in range(1, size):
            bank[m, w, :, :w] = torch.tensor(_resize_rows(w, size, method), dtype=torch.float64)
        bank[m, size] = torch.eye(size, dtype=torch.float64) * (1 << _PRECISION_BITS)
    return bank.to(device)


def _resample(x: Tensor, mat: Tensor, start: Tensor) -> Tensor:
    """One separable pass along the last axis: crop from ``start`` (per sample), multiply by the
    per-sample (size, size) coefficient matrix, then Pillow's (sum + 2**21) >> 22 and clip.
    Products < 2**31 and sums < 2**37: float64 is exact."""
    n, c, h, w = x.shape
    cols = (torch.arange(w, device=x.device) + start.view(n, 1)).clamp_(max=w - 1)  # beyond the crop: weight 0
    xs = x.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w)).to(torch.float64)
    acc = torch.matmul(xs.view(n, c * h, w), mat.transpose(1, 2)).view(n, c, h, w)
    return acc.add_(1 << (_PRECISION_BITS - 1)).mul_(1.0 / (1 << _PRECISION_BITS)).floor_().clamp_(0, 255)


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
        mat = _resize_bank(size, str(x.device))[method, width]
        out = _resample(out if axis == 3 else out.transpose(2, 3), mat, start)
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
        return (op == _IDX[name]).view(n, 1, 1)

    m = a.view(n, 1, 1)
    if present & {"autocontrast", "equalize"}:
        lo = x.amin((2, 3)).double().unsqueeze(-1)
        hi = x.amax((2, 3)).double().unsqueeze(-1)
        if "autocontrast" in present:
            lut = torch.where(sel("autocontrast"), _autocontrast_lut(lo, hi, i), lut)
        if "equalize" in present:
            lut = torch.where(sel("equalize"), _equalize_lut(_histogram(x), lo, hi, i), lut)
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
    smooth = _smooth(xf) if present & {"smooth", "sharpness"} else None
    big = _pick(op, {"smooth"}, present, smooth, big)
    base = xf
    if present & _ENHANCE:
        deg = torch.zeros_like(xf) if "brightness" in present else None  # black
        if present & {"color", "contrast"}:
            grey = _grey(xf)
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


def _cutout_stage(x: Tensor, op: Tensor, a: Tensor, cy: Tensor, cx: Tensor) -> Tensor:
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
        x = _cutout_stage(x, op, a, cy, cx)
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
        ops = torch.full((n, 1), _IDX[name], device=x.device)
        return apply_ops(x, ops, full, generator, grouped=False)

    op.__name__ = name
    op.__doc__ = f"{name}(x uint8 (N,C,H,W), {nargs} argument(s) (N,) in [0, 1]) == official OPS[{name!r}].f"
    return op


CTA_OPS: dict[str, Callable[..., Tensor]] = {name: _make_op(name) for name in CTA_OP_NAMES}


# --------------------------------------------------------------------------- the policy and its rates


def proximity(probs: Tensor, labels: Tensor) -> Tensor:
    """1 - 0.5 * sum |p - onehot(y)|: 1 for a confident correct prediction, 0 for a confident wrong one."""
    onehot = (torch.arange(probs.shape[1], device=probs.device) == labels.unsqueeze(1)).to(probs.dtype)  # no sync
    return 1 - 0.5 * (probs - onehot).abs().sum(1)


class CTAugment:
    """The bin rates of every (op, argument), a (19, 2, 17) float64 tensor on the device, with the
    official sampler, probe policy and update. ``threshold`` 0.80 is what the official FixMatch run
    uses (cta/lib/train.py's ``--ath`` default; the CTAugment class itself defaults to 0.85)."""

    def __init__(
        self, depth: int = 2, threshold: float = 0.80, decay: float = 0.99, device: torch.device | str = "cpu"
    ):
        self.depth, self.threshold, self.decay = depth, threshold, decay
        self.nbins = NBINS.to(device)
        valid = torch.arange(MAX_BINS, device=device) < self.nbins.unsqueeze(-1)  # (19, 2, 17)
        self.valid = valid
        self.rates = valid.to(torch.float64)  # official: np.ones per argument

    # ---- sampling
    def probabilities(self) -> Tensor:
        """rate_to_p per (op, argument): (rate + 1 - decay) / max, zeroed below the threshold."""
        p = torch.where(self.valid, self.rates + (1 - self.decay), 0.0)
        p = p / p.amax(-1, keepdim=True).clamp(min=1e-300)
        return torch.where(p < self.threshold, 0.0, p)

    def sample(self, n: int, generator: torch.Generator | None, probe: bool = False) -> tuple[Tensor, Tensor]:
        """A policy per sample: ops (n, depth) long, args (n, depth, 2) float64 (0 where unused).
        probe: uniform arguments; otherwise bin ~ p / sum(p), then uniform inside the bin."""
        dev = self.rates.device
        ops = torch.randint(0, len(CTA_OP_NAMES), (n, self.depth), device=dev, generator=generator)
        r = torch.rand(n, self.depth, MAX_ARGS, device=dev, generator=generator, dtype=torch.float64)
        u = torch.rand(n, self.depth, MAX_ARGS, device=dev, generator=generator, dtype=torch.float64)
        nb = self.nbins[ops]
        if probe:
            return ops, torch.where(nb > 0, r, 0.0)
        p = self.probabilities()[ops]  # (n, depth, 2, 17)
        cdf = p.cumsum(-1)
        value = (cdf <= u.unsqueeze(-1) * cdf[..., -1:]).sum(-1)  # inverse CDF; zero-p bins never hit
        last = torch.where(p > 0, torch.arange(MAX_BINS, device=dev), 0).amax(-1)
        value = torch.minimum(value, last)  # guards u * total rounding up to total
        return ops, torch.where(nb > 0, (value + r) / nb.clamp(min=1), 0.0)

    def strong_view(self, x: Tensor, *, flip: bool, generator: torch.Generator, grouped: bool | None = None) -> Tensor:
        """The unlabeled strong view: an own weak flip/shift (the official TF pair augmentation),
        then the CTA policy, then the cutout op at level 1."""
        x = weak_augment(x, flip=flip, generator=generator)
        ops, args = self.sample(x.shape[0], generator)
        return self._final_cutout(apply_ops(x, ops, args, generator, grouped), generator)

    def probe_view(
        self, x: Tensor, generator: torch.Generator, grouped: bool | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The probe of each (weakly augmented) labeled image: images, ops, args."""
        ops, args = self.sample(x.shape[0], generator, probe=True)
        return apply_ops(x, ops, args, generator, grouped), ops, args

    def views(
        self,
        unlabeled: Tensor,
        labeled_weak: Tensor,
        *,
        flip: bool,
        generator: torch.Generator,
        grouped: bool | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One step's CTA images: the unlabeled strong views (as ``strong_view``) and the probes of the
        labeled weak views (as ``probe_view``), their policies applied in one batched pass (on the
        CPU the cost is per op group, not per image). Returns strong, probes, probe ops, probe args."""
        n = unlabeled.shape[0]
        x = torch.cat([weak_augment(unlabeled, flip=flip, generator=generator), labeled_weak])
        ops, args = self.sample(n, generator)
        p_ops, p_args = self.sample(labeled_weak.shape[0], generator, probe=True)
        x = apply_ops(x, torch.cat([ops, p_ops]), torch.cat([args, p_args]), generator, grouped)
        return self._final_cutout(x[:n], generator), x[n:], p_ops, p_args

    def _final_cutout(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """The ``cutout`` op at level 1 that fixmatch.py appends to every strong policy."""
        n, _, h, w = x.shape
        cx = torch.randint(0, w, (n,), device=x.device, generator=generator)
        cy = torch.randint(0, h, (n,), device=x.device, generator=generator)
        cut = torch.full((n,), _IDX["cutout"], device=x.device)
        return _cutout_stage(x, cut, torch.ones(n, dtype=torch.float64, device=x.device), cy, cx)

    # ---- the update
    @torch.no_grad()
    def update(self, ops: Tensor, args: Tensor, prox: Tensor) -> None:
        """The official sequential update ``rate[bin] = rate[bin] * decay + prox * (1 - decay)`` over
        probes in batch order, ops in policy order, bin = int(arg * nbins * 0.999), as one batched
        step: a bin hit m times ends at ``decay**m * rate + (1 - decay) * sum_e decay**(later_e) * prox_e``
        (later_e: hits after e). Equal to the sequential float64 updates up to rounding; in place."""
        n, depth = ops.shape
        nb = self.nbins[ops]  # (n, depth, 2)
        valid = (nb > 0).reshape(-1)
        bins = torch.trunc(args.to(torch.float64) * nb * 0.999).long().clamp_(0, MAX_BINS - 1)
        arg_ix = torch.arange(MAX_ARGS, device=ops.device)
        key = ((ops.unsqueeze(-1) * MAX_ARGS + arg_ix) * MAX_BINS + bins).reshape(-1)
        key = torch.where(valid, key, 0)
        # same[e, f]: probe event f hits the bin of event e. Sums run as a small dense product and the
        # result is written, not accumulated: no atomics, so every run and every rank gets the same bits.
        same = ((key.unsqueeze(1) == key.unsqueeze(0)) & valid.unsqueeze(0)).to(torch.float64)
        later = torch.triu(same, diagonal=1).sum(1)  # hits of the same bin after this one
        p = prox.to(torch.float64).view(n, 1).expand(n, depth * MAX_ARGS).reshape(-1)
        gain = torch.where(valid, (1 - self.decay) * self.decay**later * p, 0.0)
        flat = self.rates.view(-1)
        # every event of a bin (and an argument-less event, parked on bin 0) writes the same new value
        new = flat[key] * torch.pow(self.decay, same.sum(1)) + same @ gain
        flat.index_put_((key,), new)

    @torch.no_grad()
    def learn(
        self,
        model: torch.nn.Module,
        normalize: Callable[[Tensor], Tensor],
        images: Tensor,
        ops: Tensor,
        args: Tensor,
        labels: Tensor,
        dist=None,
    ) -> None:
        """Classify the probes with ``model`` (the trainer passes the EMA model, in eval mode, before
        the step's update: the official classify_op) and update the rates, all on the device. Under
        torchrun each rank classifies its slice of the global probe batch and the probabilities are
        all-gathered, so every rank applies the identical update (per-rank BatchNorm buffers would
        otherwise make the ranks' rates drift apart)."""
        world = dist.world if dist is not None and dist.active else 1
        part = images.tensor_split(world)[dist.rank] if world > 1 else images
        probs = torch.softmax(model(normalize(part)).float(), 1)
        if world > 1:
            chunks = [torch.empty_like(probs) for _ in range(world)]
            torch.distributed.all_gather(chunks, probs)
            probs = torch.cat(chunks)
        self.update(ops, args, proximity(probs, labels))

    # ---- state
    def state_dict(self) -> dict:
        return {
            "rates": self.rates.detach().cpu().clone(),
            "depth": self.depth,
            "threshold": self.threshold,
            "decay": self.decay,
        }

    def load_state_dict(self, state: dict) -> None:
        self.rates.copy_(state["rates"].to(self.rates))  # in place: a captured CUDA graph reads this tensor

    def to_json(self) -> dict:
        """Rates and sampling probabilities per op and argument (bins), for the run directory."""
        rates, probs = self.rates.cpu(), self.probabilities().cpu()
        ops = {
            name: {
                "rates": [[round(float(v), 6) for v in rates[i, j, :nb]] for j, nb in enumerate(BINS[name])],
                "p": [[round(float(v), 6) for v in probs[i, j, :nb]] for j, nb in enumerate(BINS[name])],
            }
            for i, name in enumerate(CTA_OP_NAMES)
        }
        return {"depth": self.depth, "threshold": self.threshold, "decay": self.decay, "ops": ops}

    def stats(self) -> str:
        return stats_text(self.to_json())

    def write_json(self, path: Path, step: int) -> None:
        """The run directory's cta.json (read by ``fixmatch cta-stats``), replaced atomically."""
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"step": step, **self.to_json()}))
        tmp.replace(path)


def stats_text(state: dict) -> str:
    """The official ``stats()`` layout: one line per op (sorted), the p of each bin, arguments split by /."""
    return "\n".join(
        "%-16s    %s" % (name, " / ".join(" ".join("%.2f" % v for v in arg) for arg in state["ops"][name]["p"]))
        for name in sorted(state["ops"])
    )


def read_stats(run_dir: str) -> dict:
    """cta.json of a run directory (or the file itself), for ``fixmatch cta-stats``."""
    from fixmatch.errors import UserError

    path = Path(run_dir)
    path = path / "cta.json" if path.is_dir() else path
    if not path.is_file():
        raise UserError(
            f"no CTAugment statistics at {path}: they are written at each evaluation of a run "
            "trained with --strong-augment cta"
        )
    return json.loads(path.read_text())
