"""What every algorithm is: called with the logits of one step, it returns (loss, stats).

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
    # (logits_x, y_x[, logits_uw, logits_us][, idx_u=]) -> (loss, stats)
    __call__: Callable[..., tuple[torch.Tensor, dict]]
    uses_unlabeled = True
    uses_indices = False  # True: called with idx_u=, the pool indices of the unlabeled images

    @classmethod
    def from_config(cls, cfg, setup: AlgorithmSetup) -> Algorithm:
        return cls()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class TensorState(Algorithm):
    """An algorithm whose state is a few named tensors (STATE), each updated in place with copy_()."""

    STATE: tuple[str, ...] = ()

    def state_dict(self) -> dict:
        return {name: getattr(self, name).detach().cpu().clone() for name in self.STATE}

    def load_state_dict(self, state: dict) -> None:
        for name in self.STATE:
            getattr(self, name).copy_(state[name])
