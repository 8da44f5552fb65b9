"""What every algorithm is: called with the logits of one step, it returns (loss, stats); its
options are the `Options` dataclass in its file (fixmatch.algorithms.options reads them), and
@register puts it in ALGORITHMS under its class's name in lower case.

A stateful algorithm (FlexMatch, FreeMatch, SoftMatch) keeps its state as tensors on the training
device, updated in place without reading them back to the host (so the compiled and CUDA-graph paths
stay possible), saved in the checkpoint through state_dict()/load_state_dict(), and kept identical on
every rank under torchrun: what it learns from the unlabeled batch it first gathers from all ranks
(`AlgorithmSetup.gather`), so W ranks update it exactly as one process with the global batch would."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


def no_gather(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass(frozen=True)
class AlgorithmSetup:
    """What an algorithm may need besides its options: the classes, the unlabeled pool's size (for
    per-image state), the device its state lives on, and how to gather a per-rank tensor from all ranks."""

    num_classes: int
    pool_size: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    gather: Callable[[torch.Tensor], torch.Tensor] = no_gather


class Algorithm:
    """Called as (logits_x, y_x) when it uses no unlabeled images, else as (logits_x, y_x, logits_uw,
    logits_us, idx_u=the pool index of each unlabeled image). Its stats: scalars the engine averages
    between evaluations and logs under their names, and per image `pseudo_labels` and `mask` (a 0/1
    mask or weights), which the engine scores against the labels the algorithm never sees."""

    __call__: Callable[..., tuple[torch.Tensor, dict]]
    uses_unlabeled = True

    @classmethod
    def from_config(cls, cfg, setup: AlgorithmSetup) -> Algorithm:
        return cls()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


ALGORITHMS: dict[str, type[Algorithm]] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Add an algorithm under its class's name in lower case (FlexMatch -> flexmatch); a name taken
    twice is a mistake, not a replacement."""
    name = cls.__name__.lower()
    if name in ALGORITHMS:
        raise ValueError(f"two algorithms are named {name!r}: {ALGORITHMS[name].__module__} and {cls.__module__}")
    ALGORITHMS[name] = cls
    return cls


class TensorState(Algorithm):
    """An algorithm whose state is a few named tensors (STATE), each updated in place with copy_()."""

    STATE: tuple[str, ...] = ()

    def state_dict(self) -> dict:
        return {name: getattr(self, name).detach().cpu().clone() for name in self.STATE}

    def load_state_dict(self, state: dict) -> None:
        for name in self.STATE:
            getattr(self, name).copy_(state[name])
