#!/usr/bin/env python
"""Prepare the data that travels with a results call to the GPU machine (`dev/gpu_results.py`).

A call carries at most 64 MiB, the working tree included (16.4 MiB on 2026-12-06, 12.8 of it the
zoo's three FER2013 model files), so the datasets go in separate calls, and each one written here
says whether it fits beside today's working tree, and what to move aside when it does not:

  .gpu/cifar/cifar10_device.npz.xz   a copy of ../shared/data/cifar10_device.npz.xz (49.7 MiB):
                                     CIFAR-10's full test set + a 21,000-image train pool
  .gpu/fer/fer2013.npz.xz            FER2013 Training (28,709) + PrivateTest (3,589), PublicTest
                                     left out (~47 MiB; the whole file is 53 MiB and does not fit)
  .gpu/cifar_rest/cifar10_rest.npz.xz  a copy of ../shared/data/cifar10_rest.npz.xz (46.5 MiB): the
                                     other 29,000 train images; with cifar10_device (left on the machine
                                     by the call before) the full CIFAR-10 (stages tta_250, tta_4000)

Both are read by `fixmatch train --data-dir .gpu/<name>` as they are (the FER extract keeps the
keys and the test_usage flag the loader selects PrivateTest by). `.gpu/` is gitignored.

    python dev/gpu_results_data.py --shared ../shared/data --dest .gpu
"""

from __future__ import annotations

import argparse
import io
import lzma
import shutil
import subprocess
from pathlib import Path

import numpy as np

PRIVATE_TEST = 1  # test_usage: 0 = PublicTest, 1 = PrivateTest
REPO = Path(__file__).resolve().parents[1]
CARRY_MIB = 64  # what one call to the GPU machine carries, the working tree included
ZOO = "src/fixmatch/zoo"  # the largest tracked files; the GPU stages train without them
FER_KEYS_TRAIN = ("x_train", "y_train")
FER_KEYS_TEST = ("x_test", "y_test", "test_usage")


def read_npz_xz(path: Path) -> dict[str, np.ndarray]:
    with lzma.open(path) as f:
        return dict(np.load(io.BytesIO(f.read()), allow_pickle=False))


def write_npz_xz(arrays: dict[str, np.ndarray], path: Path, width: int, channels: int) -> None:
    """The shared copies' format: a plain .npz, xz-compressed with the pixel-difference filters
    (up, then left) that halve the size of image arrays; lzma undoes them by itself."""
    raw = io.BytesIO()
    np.savez(raw, **arrays)
    filters = [
        {"id": lzma.FILTER_DELTA, "dist": width * channels},
        {"id": lzma.FILTER_DELTA, "dist": channels},
        {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 4, "lp": 0, "pb": 0},
    ]
    tmp = path.with_name(path.name + ".tmp")
    with lzma.open(tmp, "wb", format=lzma.FORMAT_XZ, filters=filters) as f:
        f.write(raw.getbuffer())
    tmp.replace(path)


def fer_private_extract(src: Path, dest: Path) -> dict:
    """FER2013 without PublicTest: the training set and the test split the results are reported on."""
    d = read_npz_xz(src)
    keep = d["test_usage"] == PRIVATE_TEST
    out = {k: d[k] for k in FER_KEYS_TRAIN}
    out.update({k: d[k][keep] for k in FER_KEYS_TEST})
    if "class_names" in d:
        out["class_names"] = d["class_names"]
    _, _, w, c = out["x_train"].shape
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_npz_xz(out, dest, w, c)
    return {"train": int(len(out["y_train"])), "private_test": np.count_nonzero(keep), "bytes": dest.stat().st_size}


def working_tree_bytes(repo: Path, under: str = "") -> int:
    """What a call copies of the working tree: tracked files and untracked ones git does not ignore
    (those on disk; a tracked file moved aside is not copied), optionally only those `under` a folder."""
    names = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", under or "."],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return sum((repo / n.decode()).stat().st_size for n in names if n and (repo / n.decode()).is_file())


def carry_report(data: Path, repo: Path) -> str:
    """Whether `data` fits in one call beside the working tree; if not, the zoo to move aside."""
    mib = 2**20
    tree, zoo, size = working_tree_bytes(repo) / mib, working_tree_bytes(repo, ZOO) / mib, data.stat().st_size / mib
    line = f"carry: {size:.1f} MiB of data + {tree:.1f} MiB of working tree = {size + tree:.1f} of {CARRY_MIB} MiB"
    if size + tree <= CARRY_MIB:
        return line + ": fits"
    if size + tree - zoo <= CARRY_MIB:
        return (
            f"{line}: DOES NOT FIT. Move the zoo ({zoo:.1f} MiB) aside for the call and back after it, "
            f"committing nothing meanwhile: mkdir -p /tmp/zoo && mv {ZOO}/fer2013.* /tmp/zoo/ ; "
            f"after: mv /tmp/zoo/fer2013.* {ZOO}/"
        )
    return f"{line}: DOES NOT FIT, even without the zoo ({zoo:.1f} MiB)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", default="../shared/data", help="folder with the shared offline copies")
    p.add_argument("--dest", default=".gpu", help="where cifar/ and fer/ are written (gitignored)")
    p.add_argument("--only", choices=["cifar", "cifar_rest", "fer"], help="prepare one of them")
    a = p.parse_args()
    shared, dest = Path(a.shared), Path(a.dest)
    for name, file in (("cifar", "cifar10_device.npz.xz"), ("cifar_rest", "cifar10_rest.npz.xz")):
        if a.only in (None, name):
            target = dest / name / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shared / file, target)
            print(f"{target}: {target.stat().st_size:,} bytes; {carry_report(target, REPO)}")
    if a.only in (None, "fer"):
        info = fer_private_extract(shared / "fer2013.npz.xz", dest / "fer" / "fer2013.npz.xz")
        print(f"{dest / 'fer' / 'fer2013.npz.xz'}: {info}; {carry_report(dest / 'fer' / 'fer2013.npz.xz', REPO)}")


if __name__ == "__main__":
    main()
