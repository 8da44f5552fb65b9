#!/usr/bin/env python
"""Reproduce a row of RESULTS.md on your own machine (any GPU, or a CPU for the small rows): the
`fixmatch train` commands of a dataset, label count and folds, under a time budget or the full
protocol, then one table of what they reached.

    python benchmarks/reproduce.py --dataset cifar10 --num-labels 250 --fold 1 --minutes 1.9167 --data-dir DATA
    python benchmarks/reproduce.py --dataset cifar10 --num-labels 4000 --folds 1 2 3 4 5 --full --data-dir DATA
    python benchmarks/reproduce.py --dataset fer2013 --num-labels 70 --algorithm supervised --minutes 1.4439
    python benchmarks/reproduce.py ... --dry-run      # print the commands only

Where configs/ has the paper's recipe for the row (configs/<dataset>_<labels>[_cta].yaml) it is used;
otherwise the dataset's defaults. --minutes M adds `--time-budget M` (the budget rows); --full runs the
recipe's own length (the paper's 2^20 steps: hours on a GPU). Runs go to runs/reproduce/.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def recipe(dataset: str, labels: int, augment: str) -> Path | None:
    """The row's config file, if configs/ has one."""
    path = CONFIGS / f"{dataset}_{labels}{'_cta' if augment == 'cta' else ''}.yaml"
    return path if path.is_file() else None


def commands(args) -> list[tuple[Path, list[str]]]:
    """(run directory, command) for each fold of the row."""
    config = recipe(args.dataset, args.num_labels, args.strong_augment)
    out = []
    for fold in args.folds:
        name = f"{args.dataset}-{args.num_labels}-{args.strong_augment}-{args.algorithm}-fold{fold}"
        run = Path(args.out) / name
        cmd = [*shlex.split(args.fixmatch), "train"]
        cmd += (
            ["--config", str(config)] if config else ["--dataset", args.dataset, "--num-labels", str(args.num_labels)]
        )
        if not config and args.strong_augment != "ra":
            cmd += ["--strong-augment", args.strong_augment]
        cmd += ["--algorithm", args.algorithm, "--fold", str(fold), "--out", str(run), "--no-progress"]
        if args.minutes is not None:
            cmd += ["--time-budget", f"{args.minutes:g}"]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        out.append((run, cmd + args.extra))
    return out


def table(runs: list[Path]) -> str:
    lines = ["| run | accuracy | median of last 20 | steps | seconds |", "|---|---:|---:|---:|---:|"]
    for run in runs:
        s = json.loads((run / "summary.json").read_text())
        lines.append(
            f"| {run.name} | {100 * s['accuracy']:.2f} | {100 * s['median_last20']:.2f} | {s['steps']:,} | "
            f"{s['seconds']:.0f} |"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="cifar10, cifar100, svhn, stl10, fer2013, ...")
    p.add_argument("--num-labels", type=int, required=True)
    p.add_argument("--folds", "--fold", type=int, nargs="+", default=[1], help="label folds (the paper: 1 2 3 4 5)")
    p.add_argument("--algorithm", default="fixmatch", help="fixmatch, supervised, flexmatch, ...")
    p.add_argument("--strong-augment", default="ra", choices=["ra", "cta"])
    length = p.add_mutually_exclusive_group(required=True)
    length.add_argument("--minutes", type=float, help="--time-budget of each run (the budget rows)")
    length.add_argument("--full", action="store_true", help="the recipe's full length (the paper's protocol)")
    p.add_argument("--data-dir", help="the dataset's folder (default: $FIXMATCH_DATA or ./data)")
    p.add_argument("--out", default="runs/reproduce")
    p.add_argument("--fixmatch", default="fixmatch", help="how to call fixmatch (e.g. .venv/bin/fixmatch)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more `fixmatch train` options")
    args = p.parse_args(argv)
    args.extra = [a for a in args.extra if a != "--"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    planned = commands(args)
    for run, cmd in planned:
        print(shlex.join(cmd), flush=True)
        if not args.dry_run and subprocess.run(cmd).returncode != 0:
            return 1
    if not args.dry_run:
        print(table([run for run, _ in planned]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
