#!/usr/bin/env python
"""Time to accuracy on the digits demo (20 labels, 1000 steps): each algorithm and the fast recipe,
several seeds, one run at a time (`fixmatch train` in a child process, so each run starts cold).

    nice -n 5 python benchmarks/time_to_accuracy.py --seeds 0 1 2 3 4 --out runs/tta
    python benchmarks/time_to_accuracy.py --out runs/tta --summarize-only   # table + plot from the runs

Seed s uses label fold s % 5 + 1 (as benchmarks/digits_seeds.py). Each run's load average before
and after is recorded: on a shared machine the seconds move with it, the steps and images do not.
For each target accuracy: the median over seeds of the first evaluation (every 100 steps) whose EMA
accuracy reaches it: training seconds (the record's `seconds`), steps, and images forwarded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from datetime import date
from pathlib import Path

CONFIGS = {  # name -> flags of `fixmatch train --dataset digits`
    "supervised": ["--algorithm", "supervised"],
    "fixmatch": ["--algorithm", "fixmatch"],
    "flexmatch": ["--algorithm", "flexmatch"],
    "freematch": ["--algorithm", "freematch"],
    "softmatch": ["--algorithm", "softmatch"],
    "adamatch": ["--algorithm", "adamatch"],
    "dash": ["--algorithm", "dash"],
    # the paper's Fast FixMatch: FlexMatch + curriculum batch size + strong labeled augmentation
    "fastfixmatch": ["--algorithm", "flexmatch", "--unlabeled-batch-curriculum", "linear", "--labeled-strong"],
    # the same without the strong labeled augmentation
    "flexmatch_cbs": ["--algorithm", "flexmatch", "--unlabeled-batch-curriculum", "linear"],
}
TARGETS = (0.80, 0.85, 0.90)


def run_one(out: Path, name: str, seed: int) -> None:
    run = out / f"{name}-{seed}"
    if (run / "summary.json").exists():
        return
    cmd = [sys.executable, "-m", "fixmatch", "train", "--dataset", "digits", *CONFIGS[name]]
    cmd += ["--seed", str(seed), "--fold", str(seed % 5 + 1), "--no-progress", "--out", str(run)]
    before = os.getloadavg()[0]
    log = (out / f"{name}-{seed}.log").open("w")
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    with (out / "loads.jsonl").open("a") as f:
        f.write(json.dumps({"run": run.name, "load_before": before, "load_after": os.getloadavg()[0]}) + "\n")


def images_per_step(run_cfg, step: int) -> int:
    """Images the step forwards (labeled + both views of the unlabeled), from the run's config."""
    from fixmatch.training.curriculum import unlabeled_batch

    if run_cfg.algorithm == "supervised":
        return run_cfg.batch_size
    return run_cfg.batch_size + 2 * unlabeled_batch(run_cfg, step)


def curve(run: Path) -> list[dict]:
    """The run's evaluation records, each with the images forwarded up to it."""
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    cfg = json.loads((run / "summary.json").read_text())
    from fixmatch.config import from_dict
    from fixmatch.training.resolve import resolve

    config = resolve(from_dict(yaml_config(run)))
    images, step = 0, 0
    for r in records:
        images += sum(images_per_step(config, k) for k in range(step, r["step"])) if step < r["step"] else 0
        step = r["step"]
        r["images"] = images
    assert cfg["steps"] == records[-1]["step"]
    return records


def yaml_config(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())


def first_reaching(records: list[dict], target: float) -> dict | None:
    return next((r for r in records if r["accuracy"] >= target), None)


def summarize(out: Path, seeds: list[int]) -> dict:
    table: dict = {}
    for name in CONFIGS:
        runs = [out / f"{name}-{s}" for s in seeds if (out / f"{name}-{s}" / "summary.json").exists()]
        if not runs:
            continue
        curves = [curve(r) for r in runs]
        row = {
            "seeds": len(runs),
            "final_accuracy": [c[-1]["accuracy"] for c in curves],
            "seconds_total": [c[-1]["seconds"] for c in curves],
        }
        for t in TARGETS:
            hits = [first_reaching(c, t) for c in curves]
            reached = [h for h in hits if h is not None]
            row[f"reached_{t:.2f}"] = len(reached)
            for key in ("seconds", "step", "images"):
                row[f"median_{key}_to_{t:.2f}"] = statistics.median(h[key] for h in reached) if reached else None
        table[name] = row
    return table


def format_table(table: dict) -> str:
    head = "| run | seeds | final accuracy (mean, min) | " + " | ".join(
        f"to {100 * t:.0f}%: s / steps / images (seeds)" for t in TARGETS
    )
    lines = [head + " |", "|" + "---|" * (3 + len(TARGETS))]
    for name, r in table.items():
        acc = r["final_accuracy"]
        cells = [name, str(r["seeds"]), f"{100 * statistics.mean(acc):.1f}%, {100 * min(acc):.1f}%"]
        for t in TARGETS:
            s, k, i = (r[f"median_{x}_to_{t:.2f}"] for x in ("seconds", "step", "images"))
            cells.append(
                "not reached" if s is None else f"{s:.0f} / {k:.0f} / {i / 1000:.0f}k ({r[f'reached_{t:.2f}']})"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(out: Path, seeds: list[int], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, name in enumerate(CONFIGS):
        color = f"C{i}"
        for j, s in enumerate(seeds):
            run = out / f"{name}-{s}"
            if not (run / "summary.json").exists():
                continue
            c = curve(run)
            label = name if j == 0 else None
            axes[0].plot([r["seconds"] for r in c], [r["accuracy"] for r in c], color=color, alpha=0.7, label=label)
            axes[1].plot(
                [r["images"] / 1e3 for r in c], [r["accuracy"] for r in c], color=color, alpha=0.7, label=label
            )
    for ax, xlabel in zip(axes, ("training seconds (2-core CPU, shared)", "images forwarded (thousands)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (EMA model)")
        ax.set_ylim(0.3, 1.0)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    fig.suptitle("digits, 20 labels, 1000 steps: one line per seed")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--out", default="runs/time-to-accuracy")
    p.add_argument("--summarize-only", action="store_true")
    p.add_argument("--json", default=f"benchmarks/results/time_to_accuracy_cpu_{date.today()}.json")
    p.add_argument("--png", default=f"benchmarks/results/time_to_accuracy_cpu_{date.today()}.png")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.summarize_only:
        for seed in args.seeds:  # seed-major: every configuration gets the same machine conditions
            for name in args.configs:
                run_one(out, name, seed)
                print(f"done {name}-{seed}", flush=True)
    table = summarize(out, args.seeds)
    loads = (
        [json.loads(x) for x in (out / "loads.jsonl").read_text().splitlines()]
        if (out / "loads.jsonl").exists()
        else []
    )
    Path(args.json).write_text(json.dumps({"table": table, "loads": loads}, indent=1))
    plot(out, args.seeds, Path(args.png))
    print(format_table(table))


if __name__ == "__main__":
    main()
