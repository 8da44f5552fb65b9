#!/usr/bin/env python
"""The digits demo (`fixmatch train` with no arguments) over several seeds: supervised vs FixMatch
(or each of --algorithms) on the same 20 labels per seed. Prints one row per seed and algorithm
(with the load average after it), the mean, and the smallest gap.

    python benchmarks/digits_seeds.py --seeds 0 1 2
    python benchmarks/digits_seeds.py --seeds 0 1 2 3 4 --algorithms adamatch dash
"""

import argparse
import json
import os
import platform
import statistics
from datetime import date
from pathlib import Path

from fixmatch.config import TrainConfig
from fixmatch.training.train import compare


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--algorithms", nargs="+", default=["fixmatch"], help="each compared with supervised")
    p.add_argument("--out", default="runs/digits-seeds")
    p.add_argument(
        "--json",
        default=f"benchmarks/results/digits_seeds_cpu_{date.today()}.json",
        help="where the per-seed figures are written",
    )
    args = p.parse_args()
    rows = []
    for seed in args.seeds:  # a different label split (fold) and initialisation per seed
        for algorithm in args.algorithms:
            cfg = TrainConfig(
                algorithm=algorithm,
                baseline="supervised",
                seed=seed,
                fold=seed % 5 + 1,
                progress=False,
                out=f"{args.out}/{algorithm}-seed{seed}",
            )
            sup, run = compare(cfg, log=lambda *_: None)
            rows.append(
                dict(
                    seed=seed,
                    algorithm=algorithm,
                    supervised=sup["accuracy"],
                    accuracy=run["accuracy"],
                    supervised_seconds=sup["seconds"],
                    seconds=run["seconds"],
                    supervised_median=sup["median_last20"],
                    median=run["median_last20"],
                    load=os.getloadavg()[0],
                )
            )
            print(
                f"seed {seed}: supervised {100 * sup['accuracy']:.1f}%  {algorithm} {100 * run['accuracy']:.1f}%  "
                f"({sup['seconds']:.0f} s / {run['seconds']:.0f} s, load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    record = {
        "machine": f"{platform.machine()} CPU, 1 thread",
        "date": str(date.today()),
        "command": "python benchmarks/digits_seeds.py --seeds "
        + " ".join(map(str, args.seeds))
        + " --algorithms "
        + " ".join(args.algorithms),
        "rows": rows,
    }
    for algorithm in args.algorithms:
        mine = [r for r in rows if r["algorithm"] == algorithm]
        sup_mean = statistics.mean(r["supervised"] for r in mine)
        mean = statistics.mean(r["accuracy"] for r in mine)
        gap = min(r["accuracy"] - r["supervised"] for r in mine)
        record[algorithm] = {"supervised_mean": sup_mean, "mean": mean, "smallest_gap": gap}
        print(
            f"{algorithm}, mean over {len(mine)} seeds: supervised {100 * sup_mean:.1f}%  {algorithm} "
            f"{100 * mean:.1f}%  smallest gap {100 * gap:+.1f} points"
        )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
