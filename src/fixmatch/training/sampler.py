"""Index sampling on the training device: shuffled passes over a pool, no DataLoader, no host work."""

from __future__ import annotations

import torch


class EpochSampler:
    """Yields `batch` indices at a time from back-to-back random permutations of range(n).

    Like the official input pipeline (shuffle + repeat), a batch may span two passes, and a pool
    smaller than the batch (40 labels, B=64) is simply repeated.
    """

    def __init__(self, n: int, batch: int, generator: torch.Generator):
        self.n, self.batch, self.generator = n, batch, generator
        self.device = generator.device
        self.queue = torch.empty(0, dtype=torch.long, device=self.device)

    def next(self, batch: int | None = None) -> torch.Tensor:
        """The next `batch` indices (default: the sampler's batch; the curriculum batch size varies it)."""
        batch = self.batch if batch is None else batch
        while self.queue.numel() < batch:
            perm = torch.randperm(self.n, generator=self.generator, device=self.device)
            self.queue = torch.cat([self.queue, perm])
        out, self.queue = self.queue[:batch], self.queue[batch:]
        return out

    def state_dict(self, queue: torch.Tensor | None = None) -> dict:
        """The state now, or with an earlier queue (fixmatch.training.augment_stream rewinds a batch in flight)."""
        return {"queue": (self.queue if queue is None else queue).cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.queue = state["queue"].to(self.device)
