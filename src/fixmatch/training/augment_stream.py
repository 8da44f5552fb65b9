"""--augment-stream: the next step's batch is augmented on a second CUDA stream while the current
step's backward pass, SGD update and EMA run, instead of before the next step on the same stream.

The batches are exactly those of the plain order: the same sampler and generator calls in the same
order; only when the device runs them changes. A checkpoint taken while a batch is in flight records
the sampler and generator state from before it, so a resumed run draws that batch again. On CPU the
same code runs without a second stream (the order is all that differs; nothing overlaps)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from fixmatch.training.batch import Batch


class AugmentStream:
    def __init__(
        self,
        draw: Callable[[int], Batch],
        samplers: tuple[Any, ...],  # the trainer's EpochSamplers (None: none): their queues are rewound
        generator: torch.Generator,
        device: torch.device,
        owns_outputs: bool,
    ):
        self.draw = draw  # the plain draw: step -> that step's Batch
        self.samplers = samplers
        self.generator = generator
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        # Eager augmentation allocates its outputs on the side stream: the caching allocator must
        # not hand that memory out again before the main stream is done with it (record_stream).
        # Replayed CUDA graphs write into their own static buffers instead (double-buffered).
        self.owns_outputs = owns_outputs
        self.pending: tuple | None = None  # (Batch, event) in flight
        self.before: tuple | None = None  # (sampler queues, generator state) before the batch in flight

    def launch(self, step: int) -> None:
        """Start drawing step `step`'s batch. The side stream first waits for all the main stream has
        queued (this step's forward, earlier steps' backward): what it overwrites is no longer read."""
        self.before = (tuple(s.queue if s else None for s in self.samplers), self.generator.get_state())
        if self.stream is None:
            self.pending = (self.draw(step), None)
            return
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            batch = self.draw(step)
            done = torch.cuda.Event()
            done.record()
        self.pending = (batch, done)

    def take(self, step: int) -> Batch:
        """The batch launched last (step `step`'s, drawn now if none is in flight), ready to use on
        the main stream."""
        if self.pending is None:
            self.launch(step)
        assert self.pending is not None
        batch, done = self.pending
        self.pending = self.before = None
        if done is not None:
            main = torch.cuda.current_stream()
            main.wait_event(done)
            if self.owns_outputs:
                for t in batch.tensors():
                    t.record_stream(main)
        return batch

    def state_before(self) -> tuple | None:
        """(sampler queues, generator state) from before the batch in flight, None when none is."""
        return self.before
