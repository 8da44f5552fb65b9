"""The options of `fixmatch bench`, one typed dataclass whose fields make the flags (no torch here:
`fixmatch --help` must start quickly). The speed switches are the training options themselves."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, fields

from fixmatch.config import SPEED_SWITCHES, STRONG_AUGMENTS, TOGGLES, TrainConfig, opt
from fixmatch.cpus import AUTO, THREADS_HELP

TRAIN_FIELDS = {f.name: f for f in fields(TrainConfig)}


@dataclass
class BenchOptions:
    model: str = opt("wrn28_2", "network (see `fixmatch train --help`)")
    dataset: str | None = opt(None, "time on real data from this dataset (default: synthetic)")
    data_dir: str | None = opt(None, "folder holding the dataset files")
    image_size: int = opt(32, "synthetic data: side in pixels")
    channels: int = opt(3, "synthetic data: 1 or 3")
    num_classes: int = opt(10, "synthetic data: classes")
    batch_size: int = opt(64, "labeled images per step, B")
    mu: int = opt(7, "unlabeled images per labeled one")
    algorithm: str = opt("fixmatch", "fixmatch or supervised")
    randaugment: str = opt("official", "strong augmentation policy")
    strong_augment: str = opt("ra", "RandAugment (ra) or CTAugment (cta)")
    warmup: int = opt(10, "untimed steps first (compilation happens here)")
    steps: int = opt(30, "timed steps")
    device: str = opt("auto", "auto, cpu or cuda")
    threads: str | int = opt(AUTO, THREADS_HELP)
    fast: str = TRAIN_FIELDS["fast"]  # type: ignore[assignment]
    amp: str = TRAIN_FIELDS["amp"]  # type: ignore[assignment]
    channels_last: str = TRAIN_FIELDS["channels_last"]  # type: ignore[assignment]
    compile: str = TRAIN_FIELDS["compile"]  # type: ignore[assignment]
    fused_optimizer: str = TRAIN_FIELDS["fused_optimizer"]  # type: ignore[assignment]
    cuda_graph: str = TRAIN_FIELDS["cuda_graph"]  # type: ignore[assignment]
    max_autotune: str = TRAIN_FIELDS["max_autotune"]  # type: ignore[assignment]
    augment_stream: str = TRAIN_FIELDS["augment_stream"]  # type: ignore[assignment]
    augment_only: bool = opt(False, "time only producing one step's augmented, normalized batch on the device")
    json: bool = opt(False, "print one JSON object as the last line")


CHOICES = {
    "algorithm": ("fixmatch", "supervised"),
    "strong_augment": STRONG_AUGMENTS,
    **dict.fromkeys(SPEED_SWITCHES, TOGGLES),
}


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(BenchOptions)
    for f in fields(BenchOptions):
        flag, kind = "--" + f.name.replace("_", "-"), hints[f.name]
        if kind is bool:
            p.add_argument(flag, action="store_true", dest=f.name, help=f.metadata["help"])
            continue
        base = next(t for t in typing.get_args(kind) or (kind,) if t is not type(None))
        p.add_argument(
            flag, dest=f.name, type=base, default=f.default, choices=CHOICES.get(f.name), help=f.metadata["help"]
        )


def bench_options(args: argparse.Namespace) -> BenchOptions:
    return BenchOptions(**{f.name: getattr(args, f.name) for f in fields(BenchOptions)})


def bench_args(**overrides) -> BenchOptions:
    """The bench defaults, with overrides (for scripts and tests); an unknown name is a TypeError."""
    return dataclasses.replace(BenchOptions(), **overrides)
