#!/usr/bin/env python
"""The digits demo (`fixmatch train` with no arguments) over several seeds: supervised vs FixMatch
on the same 20 labels per seed. Prints one row per seed, the mean, and the smallest gap.

    python benchmarks/digits_seeds.py --seeds 0 1 2
"""

import argparse
import json
import platform
import statistics
from datetime import date
from pathlib import Path

from fixmatch.config import TrainConfig
from fixmatch.training.train import compare


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/digits-seeds")
    p.add_argument(
        "--json",
        default=f"benchmarks/results/digits_seeds_cpu_{date.today()}.json",
        help="where the per-seed figures are written",
    )
    args = p.parse_args()
    rows = []
    for seed in args.seeds:  # a different label split (fold) and initialisation per seed
        sup, fix = compare(
            TrainConfig(seed=seed, fold=seed % 5 + 1, progress=False, out=f"{args.out}/seed{seed}"), log=lambda *_: None
        )
        rows.append(
            (
                seed,
                sup["accuracy"],
                fix["accuracy"],
                sup["seconds"],
                fix["seconds"],
                sup["median_last20"],
                fix["median_last20"],
            )
        )
        print(
            f"seed {seed}: supervised {100 * sup['accuracy']:.1f}%  fixmatch {100 * fix['accuracy']:.1f}%  "
            f"({sup['seconds']:.0f} s / {fix['seconds']:.0f} s)",
            flush=True,
        )
    sup_mean = statistics.mean(r[1] for r in rows)
    fix_mean = statistics.mean(r[2] for r in rows)
    print(
        f"mean over {len(rows)} seeds: supervised {100 * sup_mean:.1f}%  fixmatch {100 * fix_mean:.1f}%  "
        f"smallest gap {100 * min(r[2] - r[1] for r in rows):+.1f} points"
    )
    keys = (
        "seed",
        "supervised",
        "fixmatch",
        "supervised_seconds",
        "fixmatch_seconds",
        "supervised_median",
        "fixmatch_median",
    )
    record = {
        "machine": f"{platform.machine()} CPU, 1 thread",
        "date": str(date.today()),
        "command": "python benchmarks/digits_seeds.py --seeds " + " ".join(map(str, args.seeds)),
        "rows": [dict(zip(keys, r)) for r in rows],
        "supervised_mean": sup_mean,
        "fixmatch_mean": fix_mean,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
