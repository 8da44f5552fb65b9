"""Decode throughput and cache load time of `--dataset folders` at 100,000 images.

    python benchmarks/decode_cache.py                 # writes /tmp/fixmatch_decode_bench, then deletes it
    python benchmarks/decode_cache.py --n 20000 --keep

Builds a folder from real pixels (CIFAR-10 and FER2013 offline copies in ../shared/data): 100 labeled
CIFAR PNGs (10 classes) and unlabeled files in 100 nested folders, a mix of formats and sizes:
40% CIFAR 32x32 PNG, 20% CIFAR upscaled to 96x72 JPEG, 10% CIFAR upscaled to 256x192 JPEG,
20% FER 48x48 grey JPEG, 10% FER 48x48 grey PNG. Then times, end to end through the loader
(listing, stat, decode or cache, split):
  1. the first load (decode with all cores, write the cache),
  2. the second load (cache hit),
  3. a load after one file changed (one decode, the rest from the cache),
and the decode rate of one process versus all of them on a slice. Results: JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
sys.path.insert(0, str(SHARED))


def sources():
    from load import load  # the shared folder's own stdlib+numpy loader

    cifar = load("cifar10_device")
    fer = load("fer2013")
    return cifar["x_train"], cifar["y_train"], fer["x_train"][..., 0] if fer["x_train"].ndim == 4 else fer["x_train"]


def write_folder(root: Path, n: int) -> dict:
    x_c, y_c, x_f = sources()
    t0 = time.perf_counter()
    for c in range(10):
        for j, i in enumerate(np.flatnonzero(y_c == c)[:10]):
            d = root / "labeled" / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x_c[i]).save(d / f"{j}.png")
    counts = {}
    for k in range(n - 100):
        d = root / "unlabeled" / f"shoot{k // 10000:02d}" / f"roll{(k // 1000) % 10}"
        if k % 1000 == 0:
            d.mkdir(parents=True, exist_ok=True)
        look = k % 10
        if look < 4:
            im, name = Image.fromarray(x_c[k % len(x_c)]), f"{k}.png"
        elif look < 6:
            im, name = Image.fromarray(x_c[k % len(x_c)]).resize((96, 72), Image.BICUBIC), f"{k}.jpg"
        elif look < 7:
            im, name = Image.fromarray(x_c[k % len(x_c)]).resize((256, 192), Image.BICUBIC), f"{k}.jpg"
        elif look < 9:
            im, name = Image.fromarray(x_f[k % len(x_f)]), f"{k}.jpg"
        else:
            im, name = Image.fromarray(x_f[k % len(x_f)]), f"{k}.png"
        im.save(d / name, quality=90) if name.endswith(".jpg") else im.save(d / name)
        counts[name.rsplit(".", 1)[1]] = counts.get(name.rsplit(".", 1)[1], 0) + 1
    return {
        "files": n,
        "write_seconds": round(time.perf_counter() - t0, 1),
        "by_suffix": counts,
        "bytes": sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
    }


def timed_load(root: Path, **kw) -> tuple[float, object, object]:
    from fixmatch.data import image_cache, load_dataset, user_folders

    seen = {}
    real = image_cache.cached_decode

    def spy(*a, **k):
        seen["decoded"] = real(*a, **k)
        return seen["decoded"]

    user_folders.cached_decode = spy
    try:
        t0 = time.perf_counter()
        data = load_dataset("folders", root, **kw)
        return time.perf_counter() - t0, data, seen["decoded"]
    finally:
        user_folders.cached_decode = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="images in all (100 of them labeled)")
    ap.add_argument("--root", type=Path, default=Path("/tmp/fixmatch_decode_bench"))
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--slice", type=int, default=5000, help="images for the 1-process vs all-processes rate")
    ap.add_argument("--keep", action="store_true", help="keep the generated folder")
    ap.add_argument("--json", type=Path, default=HERE / "results" / f"decode_cache_cpu_{date.today()}.json")
    args = ap.parse_args()
    from fixmatch.data import image_cache

    if args.root.exists():
        shutil.rmtree(args.root)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {image_cache.default_workers()} cores "
        f"({os.cpu_count()} CPUs seen)",
        "image_size": args.image_size,
        "load_avg_before": os.getloadavg(),
    }
    try:
        print(f"writing {args.n:,} images to {args.root} ...", file=sys.stderr)
        result["folder"] = write_folder(args.root, args.n)
        os.sync()

        seconds, data, got = timed_load(args.root, image_size=args.image_size, channels=3)
        result["first_load"] = {
            "seconds": round(seconds, 2),
            "decoded": got.decoded,
            "decode_seconds": round(got.seconds, 2),
            "decode_images_per_s": round(got.decoded / got.seconds),
            "processes": image_cache.default_workers(),
            "skipped": len(data.skipped),
            "unlabeled": len(data.x_unlabeled),
        }
        result["cache_bytes"] = sum(f.stat().st_size for f in (args.root / ".fixmatch-cache").iterdir())
        seconds, data, got = timed_load(args.root, image_size=args.image_size, channels=3)
        result["cache_hit_load"] = {
            "seconds": round(seconds, 2),
            "read_cache_seconds": round(got.load_seconds, 2),
            "decoded": got.decoded,
        }
        one = next((args.root / "unlabeled").rglob("*.jpg"))
        Image.open(one).transpose(Image.FLIP_LEFT_RIGHT).save(one, quality=90)
        seconds, data, got = timed_load(args.root, image_size=args.image_size, channels=3)
        result["one_file_changed_load"] = {"seconds": round(seconds, 2), "decoded": got.decoded}

        files = sorted(str(p) for p in (args.root / "unlabeled").rglob("*") if p.is_file())[: args.slice]
        for workers in (1, image_cache.default_workers()):
            t0 = time.perf_counter()
            image_cache.decode_many(files, args.image_size, 3, workers=workers)
            dt = time.perf_counter() - t0
            result[f"decode_rate_{workers}_process"] = {
                "images": len(files),
                "seconds": round(dt, 2),
                "images_per_s": round(len(files) / dt),
            }
        result["load_avg_after"] = os.getloadavg()
    finally:
        if not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
