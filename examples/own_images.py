"""Write a `folders` dataset (your-own-images layout) from scikit-learn's embedded digits.

    .venv/bin/python examples/own_images.py /tmp/digits_folders   # the venv that `make setup` made
    .venv/bin/fixmatch train --dataset folders --data-dir /tmp/digits_folders --baseline supervised --no-flip

Layout written (nothing is downloaded; the digits ship inside scikit-learn):
    labeled/<0..9>/     2 images per class (20)
    unlabeled/<a..>/..  the other 1,277 training images, nested two levels, no labels,
                        plus 4 broken files (0 bytes, truncated PNG, text named .jpg, .txt)
    test/<0..9>/        the 500 test images of the built-in `digits` dataset (same split)
Like a real folder, the images are not uniform: most are 8x8 grey PNGs, some are JPEGs, some
are upscaled to 24x24 or 13x13, and some sit in a wider 12x8 canvas (black margins), which
the loader's centre crop removes again.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

MARKER = ".written-by-own_images"
LABELS_PER_CLASS = 2
SEED = 0


def digits_split():
    """The built-in `digits` dataset's own train/test split, so the figures are comparable."""
    from fixmatch.data.digits import load_digits

    d = load_digits()
    return [(x[0].numpy(), int(y)) for x, y in zip(d.x_train, d.y_train)], [
        (x[0].numpy(), int(y)) for x, y in zip(d.x_test, d.y_test)
    ]


def save(img: np.ndarray, path_stem: Path, k: int) -> None:
    """Save one 8x8 uint8 digit; image k gets one of several looks (size, canvas, format)."""
    im = Image.fromarray(img, mode="L")
    look = k % 10
    if look == 3:
        im = im.resize((24, 24), Image.BILINEAR)
    elif look == 6:
        im = im.resize((13, 13), Image.BICUBIC)
    elif look == 8:  # wider canvas: 2 black columns each side (the centre crop removes them)
        canvas = Image.new("L", (12, 8), 0)
        canvas.paste(im, (2, 0))
        im = canvas
    if look in (1, 3):
        im.save(path_stem.with_suffix(".jpg"), quality=95)
    else:
        im.save(path_stem.with_suffix(".png"))


def write_broken(folder: Path, sample: np.ndarray) -> None:
    """Files a real folder contains sooner or later: the loader must skip and list them."""
    folder.mkdir(parents=True)
    (folder / "empty.png").write_bytes(b"")
    Image.fromarray(np.kron(sample, np.ones((8, 8), np.uint8))).save(folder / "whole.png")
    data = (folder / "whole.png").read_bytes()
    (folder / "whole.png").unlink()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "photo.jpg").write_text("this is not a JPEG\n")
    (folder / "notes.txt").write_text("labels for these come later\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="folder to create (e.g. /tmp/digits_folders)")
    args = ap.parse_args(argv)
    root = args.root
    if root.exists():
        if not (root / MARKER).exists():
            sys.exit(f"{root} exists and was not written by this script; pick a new folder")
        shutil.rmtree(root)
    train, test = digits_split()
    rng = np.random.RandomState(SEED)
    labels = np.array([y for _, y in train])
    labeled = {int(i) for c in range(10) for i in rng.choice(np.flatnonzero(labels == c), LABELS_PER_CLASS, False)}

    root.mkdir(parents=True)
    (root / MARKER).write_text("")
    n_unl = 0
    for i, (img, y) in enumerate(train):
        if i in labeled:
            folder = root / "labeled" / str(y)
        else:  # nested like a camera dump: unlabeled/<a..e>/<batch>/
            folder = root / "unlabeled" / "abcde"[n_unl % 5] / f"batch{n_unl // 100:02d}"
            n_unl += 1
        folder.mkdir(parents=True, exist_ok=True)
        save(img, folder / f"img{i:04d}", i)
    for i, (img, y) in enumerate(test):
        folder = root / "test" / str(y)
        folder.mkdir(parents=True, exist_ok=True)
        save(img, folder / f"test{i:04d}", i)
    write_broken(root / "unlabeled" / "broken", train[0][0])
    print(f"wrote {root}: labeled {len(labeled)} (2 per class), unlabeled {n_unl} + 4 broken files, test {len(test)}")


if __name__ == "__main__":
    main()
