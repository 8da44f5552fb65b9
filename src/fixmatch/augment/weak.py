"""The weak view of FixMatch (official `augment_shift` + `augment_mirror`): a random horizontal flip
and a random translation by up to 12.5% of the side with reflect padding, per sample, on the device."""

from __future__ import annotations

import torch
from torch import Tensor


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
