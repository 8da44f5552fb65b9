"""Small folders of real image files, made in the test (labeled/<class>/, unlabeled/), for the tests
of the user's-own-images path and of run folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from serve_fixtures import encode


def grey_png(path: Path, seed: int, side: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8), "PNG"))
    return path


def small_folder(root: Path, classes=("a", "b"), per_class: int = 3, unlabeled: int = 4, side: int = 12) -> Path:
    for k, c in enumerate(classes):
        for i in range(per_class):
            grey_png(root / "labeled" / c / f"{i}.png", seed=10 * k + i, side=side)
    for i in range(unlabeled):
        grey_png(root / "unlabeled" / f"u{i}.png", seed=100 + i, side=side)
    return root
