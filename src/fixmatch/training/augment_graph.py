"""The augmentation of one training step as a CUDA graph (`--cuda-graph`): captured once, replayed
each step, so its ~600 small kernels cost one launch."""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Trainer(Protocol):
    """What a capture reads of the trainer (engine.Trainer), named here so that this module, which
    the engine imports, does not import the engine back."""

    lab_sampler: Any
    unl_sampler: Any
    generator: torch.Generator
    speedups: Any

    def augment_indices(self, li: torch.Tensor, ui: torch.Tensor | None) -> Any: ...


class GraphedAugment:
    """The augmentation of one step (~600 small kernels) captured once as a CUDA graph and replayed:
    one launch per step instead of hundreds. Index sampling stays outside (it reshuffles between
    passes); the graph reads the indices from static buffers. The generator is registered with the
    graph so every replay draws fresh random numbers."""

    def __init__(self, trainer: Trainer, unlabeled: int | None = None):
        self.li = trainer.lab_sampler.next().clone()
        self.ui = trainer.unl_sampler.next(unlabeled).clone() if trainer.unl_sampler is not None else None
        fn = trainer.augment_indices
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph, as CUDA graph capture requires
            for _ in range(2):
                fn(self.li, self.ui)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.graph.register_generator_state(trainer.generator)
        with torch.cuda.graph(self.graph):
            self.out = fn(self.li, self.ui)

    @classmethod
    def try_capture(cls, trainer: Trainer, unlabeled: int | None = None):
        try:
            return cls(trainer, unlabeled)
        except Exception as e:  # noqa: BLE001 - an older torch or driver: eager augmentation still works
            import warnings

            warnings.warn(
                f"CUDA graph capture of the augmentation failed ({type(e).__name__}: {e}); augmenting eagerly"
            )
            return None

    def __call__(self, li: torch.Tensor, ui: torch.Tensor | None):
        self.li.copy_(li)
        if ui is not None and self.ui is not None:
            self.ui.copy_(ui)
        self.graph.replay()
        return self.out


class AlternatingGraphs:
    """Two captured augmentations replayed in turn (double buffering): with --augment-stream the
    next batch is written while the current step may still read the last one."""

    def __init__(self, first: GraphedAugment, second: GraphedAugment):
        self.graphs, self.turn = (first, second), 0

    def __call__(self, li: torch.Tensor, ui: torch.Tensor | None):
        self.turn ^= 1
        return self.graphs[self.turn](li, ui)


class GraphsBySize:
    """--unlabeled-batch-curriculum: one captured augmentation per unlabeled batch size, all
    captured up front (capturing draws from the samplers, so it must not happen mid-run)."""

    def __init__(self, by_size: dict):
        self.by_size = by_size

    def __call__(self, li: torch.Tensor, ui: torch.Tensor | None):
        assert ui is not None  # only built when unlabeled images are drawn
        return self.by_size[ui.shape[0]](li, ui)


def capture_one_size(trainer: Trainer, unlabeled: int | None) -> GraphedAugment | AlternatingGraphs | None:
    first = GraphedAugment.try_capture(trainer, unlabeled)
    if first is None or not trainer.speedups.augment_stream:
        return first
    second = GraphedAugment.try_capture(trainer, unlabeled)
    return AlternatingGraphs(first, second) if second is not None else None


def capture_augment(trainer: Trainer, sizes: list[int]):
    """The graphed augmentation of every unlabeled batch size the run draws (None: augment eagerly)."""
    if trainer.unl_sampler is None or len(sizes) == 1:
        return capture_one_size(trainer, None)
    graphs = {size: capture_one_size(trainer, size) for size in sizes}
    return GraphsBySize(graphs) if all(g is not None for g in graphs.values()) else None
