"""SVHN (Street View House Numbers), cropped-digit format: train_32x32.mat, test_32x32.mat and
optionally extra_32x32.mat (531,131 easier images added to the training set with svhn_extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fixmatch.data.arrays import dataset_from_arrays
from fixmatch.data.base import register
from fixmatch.data.download import fetch, missing_error, resolve_data_dir
from fixmatch.errors import DataError


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """X is stored (32, 32, 3, N) and digit 0 is labelled 10; return NHWC and labels 0..9."""
    from scipy.io import loadmat

    try:
        d = loadmat(path, variable_names=("X", "y"))
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError... for damaged files
        raise DataError(
            f"{path} is not a readable SVHN .mat file ({type(e).__name__}: {e}); delete it and download it again"
        ) from None
    if "X" not in d or "y" not in d:
        raise DataError(f"{path} lacks the X or y variable; it is not an SVHN *_32x32.mat file")
    x, y = d["X"], np.asarray(d["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or len(y) != x.shape[3]:
        raise DataError(
            f"{path}: expected X (32, 32, 3, N) uint8 and N labels, got {x.dtype} {x.shape} "
            f"and {len(y)} labels; the file is damaged"
        )
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{path}: labels must lie in 1..10 (10 = digit 0), got {y.min()}..{y.max()}")
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), (y % 10).astype(np.int64)


@register(
    "SVHN cropped digits, 32x32 RGB, 10 classes, 73,257 train (+531,131 with svhn_extra) / 26,032 test",
    # digits have a handedness: no flip (official); USB's FreeMatch SVHN configs clip its threshold
    defaults=dict(num_labels=1000, flip=False, freematch_clip_thresh=True),
    files="train_32x32.mat, test_32x32.mat (+ extra_32x32.mat with svhn_extra); --download fetches them",
)
def load_svhn(data_dir=None, download=False, svhn_extra=False, **_):
    root = resolve_data_dir(data_dir)
    wanted = ["train_32x32.mat", "test_32x32.mat"] + (["extra_32x32.mat"] if svhn_extra else [])
    missing = [f for f in wanted if not (root / f).is_file()]
    if missing and not download:
        raise missing_error(
            "svhn",
            root,
            [" + ".join(wanted)],
            f"Missing: {', '.join(missing)}. Pass --download to fetch them from "
            "http://ufldl.stanford.edu/housenumbers/ into that folder.",
        )
    for f in missing:
        fetch(f, root)
    x_train, y_train = read_mat(root / "train_32x32.mat")
    x_test, y_test = read_mat(root / "test_32x32.mat")
    if svhn_extra:
        x_extra, y_extra = read_mat(root / "extra_32x32.mat")
        x_train, y_train = np.concatenate([x_train, x_extra]), np.concatenate([y_train, y_extra])
    return dataset_from_arrays("svhn", root, x_train, y_train, x_test, y_test, [str(i) for i in range(10)])
