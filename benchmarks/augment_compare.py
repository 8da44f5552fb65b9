"""Images/s of one FixMatch step's inputs (64 weak + 448 weak + 448 strong views, 32x32x3,
normalized float): fixmatch.augment.randaugment batched on CPU vs the per-image PIL DataLoader baseline.

    python benchmarks/augment_compare.py [--steps 20] [--pil-steps 20] [--workers 2] [--device cuda] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pil_baseline import time_pil_pipeline  # noqa: E402

from fixmatch.data import ImageDataset  # noqa: E402
from fixmatch.training.bench import build_trainer, measure  # noqa: E402
from fixmatch.training.bench_options import bench_args  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
PER_STEP = 64 + 448 + 448


def load_images() -> tuple[np.ndarray, str]:
    if os.path.exists(os.path.join(DATA, "cifar10_device.npz.xz")):
        sys.path.insert(0, DATA)
        from load import load

        return load("cifar10_device")["x_train"][:10000], "CIFAR-10 (real)"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (10000, 32, 32, 3), dtype=np.uint8), "random uint8 (no dataset found)"


def time_ours(images: np.ndarray, steps: int, threads: int, device: str = "cpu") -> float:
    """Images/s of exactly what `fixmatch bench --augment-only` times: the engine's own draw of one
    step (index sampling, weak/strong views on the device) plus normalization to float."""
    data = ImageDataset(
        "cifar10",
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.zeros(len(images), dtype=torch.long),
        torch.zeros(1, 3, 32, 32, dtype=torch.uint8),
        torch.zeros(1, dtype=torch.long),
        [str(i) for i in range(10)],
    )
    args = bench_args(augment_only=True, device=device, threads=threads, warmup=3, steps=steps, fast="off")
    trainer, _, _ = build_trainer(args, data)
    return measure(args, trainer=trainer)["images_per_second"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--pil-steps", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default=None, help="also time ours on this device, e.g. cuda")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    args = ap.parse_args()

    images, source = load_images()
    default_threads = torch.get_num_threads()
    ours = [
        (f"fixmatch bench --augment-only, {t} thread(s)", time_ours(images, args.steps, t))
        for t in sorted({1, default_threads})
    ]
    if args.device:
        ours.append(
            (
                f"fixmatch bench --augment-only, {args.device}",
                time_ours(images, args.steps, default_threads, args.device),
            )
        )
    torch.set_num_threads(default_threads)
    pil = time_pil_pipeline(images, args.pil_steps, args.workers)  # after ours: no live workers
    rows = [(f"PIL DataLoader, {args.workers} workers", pil)] + ours

    if args.json:
        print(
            json.dumps(
                {
                    "data": source,
                    "cpus": os.cpu_count(),
                    "pil_workers": args.workers,
                    "pil_images_per_s": round(pil, 1),
                    "ours_images_per_s": {name: round(v, 1) for name, v in rows[1:]},
                    "speedup": {name: round(v / pil, 2) for name, v in rows[1:]},
                }
            )
        )
        return
    print(f"data: {source}; {os.cpu_count()} CPUs; step = {PER_STEP} views of 32x32x3")
    print(f"{'pipeline':<46}{'ms/step':>10}{'images/s':>12}{'vs PIL':>9}")
    for name, ips in rows:
        print(f"{name:<46}{1000 * PER_STEP / ips:>10.1f}{ips:>12.0f}{ips / pil:>8.1f}x")


if __name__ == "__main__":
    main()
