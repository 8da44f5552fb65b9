#!/usr/bin/env python
"""The semi-supervised claim on FER2013 at CPU scale: FixMatch vs supervised-only with 10 and 100
labels per class (70 and 700 labels), same small network, same steps, same seed. Unlabeled = all
28,709 Training images; test = PrivateTest. Writes a JSON table and prints a Markdown one.

    python benchmarks/fer_label_sweep.py --data-dir DATA --steps 1000
"""

import argparse
import json
from pathlib import Path

from fixmatch.config import TrainConfig
from fixmatch.data import load_data
from fixmatch.training.train import resolve, train


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="default: $FIXMATCH_DATA or ./data")
    p.add_argument("--labels-per-class", type=int, nargs="+", default=[10, 100])
    p.add_argument("--model", default="cnn_small")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/fer-label-sweep")
    args = p.parse_args()
    # A short CPU schedule, so the digits demo's short-schedule options (EMA warm-up, BN momentum 0.1).
    base = TrainConfig(
        dataset="fer2013",
        data_dir=args.data_dir,
        model=args.model,
        steps=args.steps,
        eval_every=max(args.steps // 10, 1),
        batch_size=args.batch_size,
        ema_warmup=True,
        bn_momentum=0.1,
        seed=args.seed,
        progress=False,
    )
    data = load_data(resolve(base))
    results = []
    for per_class in args.labels_per_class:
        for algorithm in ("supervised", "fixmatch"):
            cfg = TrainConfig(
                **{
                    **base.to_dict(),
                    "algorithm": algorithm,
                    "num_labels": 7 * per_class,
                    "out": f"{args.out}/{per_class}pc-{algorithm}",
                }
            )
            r = train(cfg, log=lambda *_: None, data=data)
            results.append(r)
            print(json.dumps(r), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.json").write_text(json.dumps(results, indent=1))
    print("| labels | algorithm | PrivateTest accuracy (last) | median of last evals | CPU seconds |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['num_labels']} | {r['algorithm']} | {100 * r['accuracy']:.1f}% | "
            f"{100 * r['median_last20']:.1f}% | {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
