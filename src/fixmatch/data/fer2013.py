"""FER2013 facial expressions, 48x48 grey, 7 classes, from any of its three common forms:
Kaggle's fer2013.csv, Kaggle's image-folder release, or fer2013.npz.xz (the arrays, xz-compressed).

Train is the "Training" usage; test is "PrivateTest" (the final leaderboard set) unless
fer_test="public" picks "PublicTest".
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np

from fixmatch.data.arrays import dataset_from_arrays, integer_labels, require_keys
from fixmatch.data.base import register
from fixmatch.data.download import missing_error, resolve_data_dir
from fixmatch.data.imagefolder import class_folders, read_images
from fixmatch.data.npz import read_npz_xz
from fixmatch.errors import DataError, UserError

CLASS_NAMES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
SIDE = 48
TEST_USAGE = {"public": "PublicTest", "private": "PrivateTest"}
USAGES = ("Training", "PublicTest", "PrivateTest")
KAGGLE_PAGE = "https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge"


def how_to_get(root: Path) -> str:
    return (
        "FER2013 has no public download URL, so --download cannot fetch it. Download fer2013.csv "
        '(inside fer2013.tar.gz) from the Kaggle competition "Challenges in Representation Learning: '
        f'Facial Expression Recognition Challenge" ({KAGGLE_PAGE}/data) and save it as {root / "fer2013.csv"}.'
    )


def parse_pixels(text: str) -> np.ndarray:
    """One CSV 'pixels' cell: 2304 space-separated values 0..255 -> (48, 48) uint8."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # older numpy only warns on junk; make it fail
        try:
            px = np.fromstring(text, dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            raise ValueError("pixels must be space-separated integers") from None
    if px.size != SIDE * SIDE:
        raise ValueError(f"{px.size} pixel values, expected {SIDE * SIDE}")
    if px.min() < 0 or px.max() > 255:
        raise ValueError("pixel values must lie in 0..255")
    return px.astype(np.uint8).reshape(SIDE, SIDE)


def read_csv(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{usage: (images, labels)} from Kaggle's fer2013.csv (columns emotion, pixels, Usage)."""
    rows: dict[str, tuple[list, list]] = {u: ([], []) for u in USAGES}
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            if not {"emotion", "pixels", "Usage"} <= set(header):
                raise DataError(f"{path}: the header must name the columns emotion, pixels, Usage; got {header}")
            ie, ip, iu = (header.index(c) for c in ("emotion", "pixels", "Usage"))
            for line, row in enumerate(reader, start=2):
                try:
                    label, usage = int(row[ie]), row[iu].strip()
                    if not 0 <= label < len(CLASS_NAMES) or usage not in rows:
                        raise ValueError(f"emotion must be 0..6 and Usage one of {', '.join(USAGES)}")
                    image = parse_pixels(row[ip])
                except (ValueError, IndexError) as e:
                    raise DataError(
                        f"{path}, line {line}: bad row ({e}); the file is damaged, download it again"
                    ) from None
                rows[usage][0].append(image)
                rows[usage][1].append(label)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path} ({e}); download it again") from None
    return {
        u: (np.array(xs, dtype=np.uint8).reshape(-1, SIDE, SIDE), np.array(ys, dtype=np.int64))
        for u, (xs, ys) in rows.items()
    }


def has_kaggle_folders(root: Path) -> bool:
    """train/ and test/ whose subfolders are the seven lowercase class names."""
    known = {c.lower() for c in CLASS_NAMES}
    if not ((root / "train").is_dir() and (root / "test").is_dir()):
        return False
    subdirs = {d.name.lower() for d in (root / "train").iterdir() if d.is_dir() and not d.name.startswith(".")}
    return bool(subdirs) and subdirs <= known


def read_kaggle_split(split_dir: Path, prefix: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Images of one split folder; in test/ only the files named <prefix>_*."""
    index = {c.lower(): i for i, c in enumerate(CLASS_NAMES)}
    paths, labels = [], []
    for folder, files in class_folders(split_dir).items():
        if folder.lower() not in index:
            raise DataError(f"fer2013: unknown class folder {split_dir / folder}; expected {', '.join(sorted(index))}")
        chosen = [p for p in files if prefix is None or p.name.startswith(prefix + "_")]
        paths += chosen
        labels += [index[folder.lower()]] * len(chosen)
    if not paths:
        what = f"files named {prefix}_*" if prefix else "image files"
        raise DataError(f"fer2013: no {what} in {split_dir}/<class>/")
    return read_images(paths, "L", size=(SIDE, SIDE)), np.array(labels, dtype=np.int64)


def read_offline(path: Path, test_usage: str) -> tuple:
    d = read_npz_xz(path)
    require_keys(d, ("x_train", "y_train", "x_test", "y_test", "test_usage"), path)
    keep = d["test_usage"] == {"PublicTest": 0, "PrivateTest": 1}[test_usage]
    return (
        d["x_train"],
        integer_labels(d["y_train"], "y_train", path),
        d["x_test"][keep],
        integer_labels(d["y_test"], "y_test", path)[keep],
    )


@register(
    "FER2013 facial expressions, 48x48 grey, 7 classes, 28,709 train / 3,589 test (private or public)",
    defaults=dict(model="wrn37_2", num_labels=28709),  # every Training image labeled
    files="fer2013.csv (Kaggle), or train/<class>/ + test/<class>/ (Kaggle image folders), or fer2013.npz.xz",
    framing="face",  # a photo is framed like the dataset: the detected face, cropped tight
)
def load_fer2013(data_dir=None, download=False, fer_test="private", **_):
    if fer_test not in TEST_USAGE:
        raise UserError(f"fer_test must be 'private' or 'public', got {fer_test!r}")
    usage = TEST_USAGE[fer_test]
    root = resolve_data_dir(data_dir)
    csv_path = next((p for p in (root / "fer2013.csv", root / "fer2013" / "fer2013.csv") if p.is_file()), None)
    if csv_path:
        parts = read_csv(csv_path)
        arrays, source = (*parts["Training"], *parts[usage]), csv_path
    elif has_kaggle_folders(root):
        arrays, source = (*read_kaggle_split(root / "train", None), *read_kaggle_split(root / "test", usage)), root
    elif (root / "fer2013.npz.xz").is_file():
        arrays, source = read_offline(root / "fer2013.npz.xz", usage), root / "fer2013.npz.xz"
    else:
        raise missing_error(
            "fer2013",
            root,
            [
                "fer2013.csv (or fer2013/fer2013.csv): Kaggle's CSV with columns emotion, pixels, Usage",
                "train/<class>/*.jpg and test/<class>/{PublicTest,PrivateTest}_*.jpg, classes "
                + ", ".join(c.lower() for c in CLASS_NAMES),
                "fer2013.npz.xz: x_train, y_train, x_test, y_test, test_usage as an xz-compressed .npz",
            ],
            how_to_get(root),
            files=("fer2013.csv", "fer2013/fer2013.csv", "fer2013.npz.xz"),
        )
    return dataset_from_arrays("fer2013", source, *arrays, list(CLASS_NAMES))
