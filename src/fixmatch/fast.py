"""The speed switches of the training step. Each is independent so its effect can be measured;
`fast=off` is the plain eager fp32 path, and every switch computes the same function."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Speedups:
    amp: bool = False  # bf16 autocast; BatchNorm parameters and statistics stay fp32
    channels_last: bool = False
    compile: bool = False  # torch.compile of normalize + model + loss
    fused_optimizer: bool = False  # fused SGD kernel (else foreach)
    cuda_graph: bool = False  # compile mode "reduce-overhead": CUDA graphs of forward and backward

    def describe(self) -> str:
        on = [k for k, v in asdict(self).items() if v]
        return "+".join(on) if on else "plain"


def resolve_speedups(cfg, device: torch.device) -> Speedups:
    """auto = on for CUDA, off for CPU; fast=on turns every auto switch on (CPU too), fast=off all off."""

    def pick(value: str, auto_default: bool) -> bool:
        if cfg.fast == "off":
            return False
        if value == "auto":
            return True if cfg.fast == "on" else auto_default
        return value == "on"

    cuda = device.type == "cuda"
    return Speedups(
        amp=pick(cfg.amp, cuda),
        channels_last=pick(cfg.channels_last, cuda),
        compile=pick(cfg.compile, cuda),
        fused_optimizer=pick(cfg.fused_optimizer, cuda),
        cuda_graph=pick(cfg.cuda_graph, False) and cuda,
    )


def autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def compile_fn(fn, speedups: Speedups):
    if not speedups.compile and not speedups.cuda_graph:
        return fn
    mode = "reduce-overhead" if speedups.cuda_graph else None
    return torch.compile(fn, mode=mode, dynamic=False)
