"""Your own images under a time budget: what `--time-budget` chooses on a folder, against the fixed
folders defaults and against supervised training, at the same budgets.

    python benchmarks/folder_budgets.py build --out FOLDERS      # the two folder datasets, as image files
    python benchmarks/folder_budgets.py run --folders FOLDERS --out RESULTS --minutes 1 3 10

`build` writes real images as files in the `--dataset folders` layout: `digits` (the embedded 8x8
digits as PNGs: 2 labeled per class, the rest of the training split unlabeled, the test split as
test/) and `faces` (FER2013 from $FIXMATCH_DATA: 100 labeled faces per class, 5,000 unlabeled,
1,000 PrivateTest faces as test/, each written at 48, 96 or 144 px in turn, as photos come in several
sizes). `run` trains, one run at a time, each in its own process timed from its start to its exit:
`auto` (nothing named: the budget chooses), `fixed` (the fixed folders defaults, named so that the
budget chooses nothing: FixMatch, cnn_small, the labeled images' median side capped at 32) and
`supervised` (the same, labeled loss only). A row is
written to RESULTS/results.jsonl as each run ends, with the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

SIZES = (48, 96, 144)  # faces: each written at one of these sides, in turn
DATASET_FLAGS = {"digits": ["--no-flip"]}  # what a folders run advises for digits: a mirrored digit is another symbol
CONFIGS = {
    "auto": [],
    "fixed": ["--algorithm", "fixmatch", "--model", "cnn_small"],
    "supervised": ["--algorithm", "supervised", "--model", "cnn_small"],
}


def write_png(path: Path, pixels: np.ndarray, side: int | None = None) -> None:
    from PIL import Image

    image = Image.fromarray(pixels.squeeze())
    if side is not None and side != image.width:
        image = image.resize((side, side), Image.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def write_split(root: Path, x, y, names, labeled_per_class: int, unlabeled: int, test_x, test_y, sides, seed=0):
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(y))
    taken = {c: 0 for c in range(len(names))}
    n_unl = 0
    for k, i in enumerate(order):
        side = sides[k % len(sides)] if sides else None
        c = int(y[i])
        if taken[c] < labeled_per_class:
            taken[c] += 1
            write_png(root / "labeled" / names[c] / f"{i}.png", x[i], side)
        elif n_unl < unlabeled:
            n_unl += 1
            write_png(root / "unlabeled" / f"{i % 50:02d}" / f"{i}.png", x[i], side)
    for i in range(len(test_y)):
        side = sides[i % len(sides)] if sides else None
        write_png(root / "test" / names[int(test_y[i])] / f"{i}.png", test_x[i], side)


def build(out: Path) -> None:
    from fixmatch.data import load_dataset

    digits = load_dataset("digits")
    xd = digits.x_train.permute(0, 2, 3, 1).numpy()
    xt = digits.x_test.permute(0, 2, 3, 1).numpy()
    write_split(
        out / "digits", xd, digits.y_train.numpy(), digits.class_names, 2, 10**9, xt, digits.y_test.numpy(), None
    )
    fer = load_dataset("fer2013", os.environ.get("FIXMATCH_DATA"))
    xf = fer.x_train.permute(0, 2, 3, 1).numpy()
    xft = fer.x_test.permute(0, 2, 3, 1).numpy()[:1000]
    names = [n.lower() for n in fer.class_names]
    write_split(out / "faces", xf, fer.y_train.numpy(), names, 100, 5000, xft, fer.y_test.numpy()[:1000], SIZES)
    for name in ("digits", "faces"):
        print(name, sum(1 for _ in (out / name).rglob("*.png")), "files", flush=True)


def fixed_default_size(root: Path) -> int:
    """The size a folders run takes without a budget: the labeled images' median side, capped."""
    from fixmatch.data.user_folders import MAX_DEFAULT_SIZE, default_size, median_side, scan

    return default_size(median_side(scan(root, 0)) or MAX_DEFAULT_SIZE)


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def run(folders: Path, out: Path, minutes: list[float], datasets: list[str], configs: list[str], seed=None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for budget in minutes:  # the shortest budgets first: every dataset has its row before a longer one starts
        for name in datasets:
            for config in configs:
                run_dir = out / f"{name}-{config}-{budget:g}min{'' if seed is None else f'-seed{seed}'}"
                if (run_dir / "summary.json").exists():
                    continue
                cmd = [sys.executable, "-m", "fixmatch", "train", "--dataset", "folders"]
                cmd += ["--data-dir", str(folders / name), "--time-budget", f"{budget:g}", "--out", str(run_dir)]
                cmd += ["--no-progress", "--overwrite", *CONFIGS[config], *DATASET_FLAGS.get(name, [])]
                cmd += [] if seed is None else ["--seed", str(seed)]
                if config != "auto":  # the fixed default size, named: a budget would choose it otherwise
                    cmd += ["--image-size", str(fixed_default_size(folders / name))]
                before, t = loadavg(), time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                wall = time.perf_counter() - t
                (out / f"{run_dir.name}.log").write_text(proc.stdout + proc.stderr)
                row = dict(dataset=name, config=config, budget_min=budget, seed=seed, wall_s=round(wall, 1))
                row["rc"] = proc.returncode
                row.update(load_before=before, load_after=loadavg())
                if proc.returncode == 0:
                    s = json.loads((run_dir / "summary.json").read_text())
                    row.update({k: s.get(k) for k in ("algorithm", "model", "steps", "accuracy", "median_last20")})
                    row["image_size"] = yaml.safe_load((run_dir / "config.yaml").read_text()).get("image_size")
                    row["chosen"] = [
                        ln for ln in (proc.stdout + proc.stderr).splitlines() if "--time-budget chose" in ln
                    ]
                with open(out / "results.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


def table(results: list[Path]) -> str:
    """RESULTS.md's table from results.jsonl files (a later file's row replaces an earlier one's)."""
    rows = {}
    for path in results:
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r.get("seed") is None:  # the seeded repeats are summed up apart
                rows[r["dataset"], r["budget_min"], r["config"]] = r

    def cell(r: dict | None) -> str:
        if r is None or r["rc"] != 0:
            return "not run" if r is None else f"failed (exit {r['rc']})"
        return (
            f"{100 * r['accuracy']:.1f}% / {100 * r['median_last20']:.1f}% ({r['algorithm']}, {r['model']} "
            f"{r['image_size']} px, {r['steps']:,} steps)"
        )

    out = [
        "| dataset | budget | chosen by the budget | fixed defaults (FixMatch) | supervised | wall s (each) | load |"
    ]
    out.append("|---|---:|---|---|---|---|---|")
    for name, budget in sorted({(d, b) for d, b, _ in rows}, key=lambda k: (k[0], k[1])):
        runs = [rows.get((name, budget, c)) for c in CONFIGS]
        walls = " / ".join(f"{r['wall_s']:.0f}" for r in runs if r)
        loads = [x for r in runs if r for x in (r["load_before"], r["load_after"])]
        load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else ""
        out.append(f"| {name} | {budget:g} min | " + " | ".join(cell(r) for r in runs) + f" | {walls} | {load} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the two folder datasets")
    b.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run", help="train each configuration at each budget, one at a time")
    r.add_argument("--folders", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--minutes", type=float, nargs="+", default=[1, 3, 10])
    r.add_argument("--datasets", nargs="+", default=["digits", "faces"])
    r.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    r.add_argument("--seed", type=int, help="passed to every run (default: the training default)")
    t = sub.add_parser("table", help="the markdown table of results.jsonl files (later files win)")
    t.add_argument("results", type=Path, nargs="+")
    args = p.parse_args()
    if args.command == "build":
        build(args.out)
    elif args.command == "table":
        print(table(args.results))
    else:
        run(args.folders, args.out, args.minutes, args.datasets, args.configs, args.seed)


if __name__ == "__main__":
    main()
