"""Which torch device a run uses, and waiting for it."""

from __future__ import annotations

import torch

from fixmatch.errors import UserError


def pick_device(name: str) -> torch.device:
    """auto = the GPU when torch sees one, else the CPU; asking for CUDA without one is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but torch sees no CUDA GPU here; use --device cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    """Wait until the device has finished its queued work (clock readings then measure finished work)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
