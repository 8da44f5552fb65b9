"""The options of `fixmatch bench` (no torch here: `fixmatch --help` must start quickly)."""

from __future__ import annotations

import argparse
import dataclasses

from fixmatch.config import SPEED_SWITCHES, STRONG_AUGMENTS, TOGGLES, TrainConfig
from fixmatch.cpus import AUTO, THREADS_HELP


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="wrn28_2")
    p.add_argument("--dataset", default=None, help="time on real data from this dataset (default: synthetic)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--image-size", type=int, default=32, help="synthetic data: side in pixels")
    p.add_argument("--channels", type=int, default=3, help="synthetic data: 1 or 3")
    p.add_argument("--num-classes", type=int, default=10, help="synthetic data: classes")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--mu", type=int, default=7)
    p.add_argument("--algorithm", default="fixmatch", choices=["fixmatch", "supervised"])
    p.add_argument("--randaugment", default="official")
    p.add_argument("--strong-augment", default="ra", choices=STRONG_AUGMENTS, help="RandAugment or CTAugment")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation happens here)")
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", default=AUTO, help=THREADS_HELP)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name in SPEED_SWITCHES:  # the training options themselves: same defaults, same help
        p.add_argument(
            "--" + name.replace("_", "-"),
            default=fields[name].default,
            choices=TOGGLES,
            help=fields[name].metadata["help"],
        )
    p.add_argument(
        "--augment-only",
        action="store_true",
        help="time only producing one step's augmented, normalized batch on the device",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def bench_args(**overrides) -> argparse.Namespace:
    """The bench defaults as a Namespace, with overrides (for scripts and tests)."""
    p = argparse.ArgumentParser()
    add_bench_arguments(p)
    args = p.parse_args([])
    for k, v in overrides.items():
        if not hasattr(args, k):
            raise TypeError(f"unknown bench option {k!r}")
        setattr(args, k, v)
    return args
