"""The speed switches of the training step. Each is independent so its effect can be measured;
`fast=off` is the plain eager fp32 path, and every switch computes the same function."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from fixmatch.errors import UserError


@dataclass(frozen=True)
class Speedups:
    amp: bool = False  # bf16 autocast; BatchNorm parameters and statistics stay fp32
    channels_last: bool = False
    compile: bool = False  # torch.compile of normalize + model + loss
    fused_optimizer: bool = False  # fused SGD kernel (else foreach)
    cuda_graph: bool = False  # compile mode "reduce-overhead": CUDA graphs of forward and backward
    max_autotune: bool = False  # compile mode "max-autotune": Inductor times Triton templates per shape
    augment_stream: bool = False  # the next batch augmented on a second stream (fixmatch.training.augment_stream)

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
    s = Speedups(
        amp=pick(cfg.amp, cuda),
        channels_last=pick(cfg.channels_last, cuda),
        compile=pick(cfg.compile, cuda),
        fused_optimizer=pick(cfg.fused_optimizer, cuda),
        cuda_graph=pick(cfg.cuda_graph, False) and cuda,
        max_autotune=pick(cfg.max_autotune, False),
        augment_stream=pick(cfg.augment_stream, False),  # on CPU too: the same order, no overlap
    )
    if s.max_autotune and not (s.compile or s.cuda_graph):
        raise UserError(
            f"--max-autotune tunes torch.compile, which is off here (device {device.type}, --fast {cfg.fast}, "
            f"--compile {cfg.compile}): add --compile on or leave --max-autotune off"
        )
    return s


COMPILE_MODES = {  # (cuda_graph, max_autotune) -> torch.compile's mode
    (False, False): None,
    (True, False): "reduce-overhead",
    (False, True): "max-autotune-no-cudagraphs",
    (True, True): "max-autotune",  # max-autotune with CUDA graphs
}


def compile_fn(fn, speedups: Speedups):
    if not speedups.compile and not speedups.cuda_graph:
        return fn
    return torch.compile(fn, mode=COMPILE_MODES[speedups.cuda_graph, speedups.max_autotune], dynamic=False)
