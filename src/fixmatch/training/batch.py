"""What one training step is given: the augmented images of every view with what goes with them, as
one value (no side channel), and the schedule the loop follows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor


class CTAProbe(NamedTuple):
    """CTAugment's probes of the labeled weak views: images, the ops and arguments each probe used,
    and the images' labels (CTAugment.learn takes them in this order)."""

    images: Tensor
    ops: Tensor
    args: Tensor
    labels: Tensor


class Batch(NamedTuple):
    x: Tensor  # uint8 [labeled (weak, or strong with --labeled-strong) | unlabeled weak | unlabeled strong]
    y_l: Tensor  # the labels of the labeled images
    idx_u: Tensor | None  # the unlabeled images' indices in the pool (None: supervised)
    probe: CTAProbe | None = None  # --strong-augment cta only

    def tensors(self) -> list[Tensor]:
        return [t for t in (self.x, self.y_l, self.idx_u, *(self.probe or ())) if t is not None]


@dataclass(frozen=True)
class Schedule:
    """How long the run is and the cosine's K: the config's, until --time-budget plans others."""

    steps: int
    lr_steps: int
