"""A step that cannot fit in memory is refused before the run starts, saying what would fit.

One step forwards B labeled images and, for each of them, mu unlabeled images in two views: its
float32 inputs alone take B * (1 + 2 mu) * C * H * W * 4 bytes, and the network's activations many
times that. When the inputs alone exceed the memory the device has free, the step can only end in an
allocation error (after minutes of loading) or a machine swapping to a halt, so it is refused here.
The bound counts the inputs only: a step that passes can still be too large for the network.
"""

from __future__ import annotations

import os

import torch

from fixmatch.data.image_cache import available_ram
from fixmatch.errors import UserError

FLOAT_BYTES = 4


def free_bytes(device: torch.device) -> int | None:
    """Memory free for a step on `device` now (None: unknown, nothing refused)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    ram = available_ram()  # Linux's MemAvailable
    if ram is not None:
        return ram
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_step_fits(cfg, image_shape, device: torch.device, world: int = 1, free: int | None = None) -> None:
    """Refuse a step whose inputs alone exceed the free memory of its device (per rank under torchrun)."""
    free = free_bytes(device) if free is None else free
    if free is None:
        return
    batch_size, mu = cfg.batch_size, (0 if cfg.algorithm == "supervised" else cfg.mu)
    per_image = FLOAT_BYTES * int(torch.Size(image_shape).numel())
    views = 1 + 2 * mu  # a labeled image, and mu unlabeled ones in a weak and a strong view
    batch = -(-batch_size // world)
    need = batch * views * per_image
    if need <= free:
        return
    fits_b = free // (views * per_image)
    fits_mu = (free // (batch * per_image) - 1) // 2
    advice = (
        f"at most --batch-size {fits_b} fits with --mu {mu}"
        if fits_b >= 1
        else f"not even --batch-size 1 fits with --mu {mu}; lower --mu "
        f"(at most {max(fits_mu, 0)} with --batch-size {batch})"
    )
    shape = "x".join(str(s) for s in image_shape)
    raise UserError(
        f"one step of {batch:,} labeled and {batch * mu:,} unlabeled images (two views each) of {shape} needs "
        f"{need / 2**30:,.1f} GiB for its inputs alone, and {device.type} has {free / 2**30:,.1f} GiB free: "
        f"{advice} (less, once the network's activations are counted)"
    )
