"""STL-10, the paper's "real unlabeled pool": 5,000 labeled 96x96 RGB training images in 10 classes,
8,000 test images, and 100,000 unlabeled images drawn from a wider distribution (other animals and
vehicles besides the 10 classes), from the official binary release (stl10_binary/).

Format (the release's README): each *_X.bin is raw uint8, 3 x 96 x 96 bytes per image, channel by
channel (red, green, blue), each channel stored column-major (x outer, y inner: the transpose of
the usual row order); *_y.bin holds one byte per image, labels 1..10; fold_indices.txt has 10
lines of 1,000 zero-based indices into train_X, the 10 predefined labeled folds.

Labels: the official FixMatch code (scripts/create_split.py) takes, for 1,000 labels, line `seed`
(0-based) of fold_indices.txt, with seeds 1..5 in its runs. Here `--fold F` takes line F the same
way (fixed_splits maps every line 0..9 to its indices); the unlabeled pool is the 5,000 training
images followed by the 100,000 unlabeled ones, as the official create_unlabeled.py builds it.
"""

from __future__ import annotations

import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from fixmatch.data.base import ImageDataset, register
from fixmatch.data.download import REMOTES, Remote, fetch, missing_error, resolve_data_dir
from fixmatch.errors import DataError, UserError

FOLDER = "stl10_binary"
ARCHIVE = "stl10_binary.tar.gz"
SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE
CLASS_NAMES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
LABELED_FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "fold_indices.txt")
UNLABELED_FILE = "unlabeled_X.bin"

# The official archive (2.6 GB). MD5 as published with the dataset loaders that use it (e.g. torchvision).
REMOTES[ARCHIVE] = Remote(
    "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz", "91f7769df0f17e558f3565bffb0c7dfb"
)


def read_images(path: Path) -> torch.Tensor:
    """A *_X.bin file -> uint8 (N, 3, 96, 96), rows in the usual (y, x) order. Read through a memory
    map in chunks, so the 2.8 GB unlabeled file needs its own size in RAM, not twice that."""
    try:
        nbytes = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"stl10: {path} is missing") from None
    if nbytes == 0 or nbytes % IMAGE_BYTES:
        raise DataError(
            f"stl10: {path} holds {nbytes:,} bytes, not a whole number of 3x96x96 images; "
            "the file is truncated or damaged (extract or download it again)"
        )
    raw = np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, 3, SIDE, SIDE)
    out = torch.empty((len(raw), 3, SIDE, SIDE), dtype=torch.uint8)
    for i in range(0, len(raw), 8192):  # stored (N, C, x, y): swap the last two axes for (N, C, y, x)
        out[i : i + 8192] = torch.from_numpy(np.ascontiguousarray(raw[i : i + 8192].transpose(0, 1, 3, 2)))
    del raw
    return out


def read_labels(path: Path, n: int) -> torch.Tensor:
    try:
        y = np.fromfile(path, dtype=np.uint8).astype(np.int64)
    except FileNotFoundError:
        raise DataError(f"stl10: {path} is missing") from None
    if len(y) != n:
        raise DataError(f"stl10: {path} has {len(y)} labels for {n} images; the file is damaged")
    if n and (y.min() < 1 or y.max() > len(CLASS_NAMES)):
        raise DataError(f"stl10: {path} labels must lie in 1..10, got {y.min()}..{y.max()}; the file is damaged")
    return torch.from_numpy(y - 1)


def read_folds(path: Path, n_train: int) -> dict[int, np.ndarray]:
    """fold_indices.txt: line F (0-based) -> the zero-based train indices of fold F."""
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        folds = {f: np.array(sorted(int(v) for v in ln.split()), dtype=np.int64) for f, ln in enumerate(lines)}
    except FileNotFoundError:
        raise DataError(f"stl10: {path} is missing") from None
    except ValueError as e:
        raise DataError(f"stl10: {path} must hold lines of integer indices ({e})") from None
    bad = [
        f
        for f, idx in folds.items()
        if len(idx) == 0 or idx.min() < 0 or idx.max() >= n_train or len(np.unique(idx)) != len(idx)
    ]
    if not folds or bad:
        raise DataError(
            f"stl10: {path}: every line must list distinct indices in 0..{n_train - 1} "
            f"(bad lines: {', '.join(map(str, bad)) or 'no lines at all'})"
        )
    return folds


def read_class_names(folder: Path) -> list[str]:
    path = folder / "class_names.txt"
    if path.is_file():
        names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        if len(names) == len(CLASS_NAMES):
            return names
    return list(CLASS_NAMES)


def extract(archive: Path, root: Path, with_unlabeled: bool) -> Path:
    """Unpack only the known regular files of the official archive into root/stl10_binary/."""
    wanted = set(LABELED_FILES) | {"class_names.txt"} | ({UNLABELED_FILE} if with_unlabeled else set())
    out = root / FOLDER
    print(f"extracting {archive} -> {out}", file=sys.stderr)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted:  # never trust paths inside an archive
                    src = tar.extractfile(member)
                    if src is None:  # isfile() above: never happens, but the type says it may
                        continue
                    tmp = out / f"{base}.part"
                    with open(tmp, "wb") as f:
                        while chunk := src.read(1 << 22):
                            f.write(chunk)
                    tmp.replace(out / base)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{archive} is not a readable .tar.gz ({e}); delete it and download it again") from None
    return out


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Square uint8 images -> size x size (antialiased bilinear), in chunks to bound the float copy."""
    if size == x.shape[-1]:
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, len(x), 4096):
        chunk = x[i : i + 4096].float()
        out[i : i + 4096] = (
            torch.nn.functional.interpolate(
                chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
            .round_()
            .clamp_(0, 255)
        )
    return out


@register(
    "STL-10, 96x96 RGB, 10 classes, 5,000 labeled train (10 predefined folds of 1,000) + 100,000 unlabeled "
    "(some outside the 10 classes) / 8,000 test",
    # The paper's STL-10 row: 1,000 labels (an official fold), WRN-37-2 (WRN-var), the CIFAR recipe.
    defaults=dict(model="wrn37_2", num_labels=1000),  # the paper's STL-10 settings
    files=f"{FOLDER}/ with train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin, "
    f"fold_indices.txt, or {ARCHIVE} (--download)",
)
def load_stl10(data_dir=None, download=False, image_size=None, stl10_unlabeled=True, **_):
    """image_size: resize from 96 (e.g. 32 or 48 for CPU-scale runs); stl10_unlabeled=False leaves the
    100,000 unlabeled images out (the pool is then the 5,000 training images)."""
    root = resolve_data_dir(data_dir)
    folder = root / FOLDER
    if not folder.is_dir() and (root / "train_X.bin").is_file():  # --data-dir may be stl10_binary/ itself
        folder = root
    if not folder.is_dir():
        archive = root / ARCHIVE
        if not archive.is_file() and download:
            archive = fetch(ARCHIVE, root)
        if not archive.is_file():
            raise missing_error(
                "stl10",
                root,
                [
                    f"{FOLDER}/ with {', '.join(LABELED_FILES)} and {UNLABELED_FILE} (the official binary release)",
                    f"{ARCHIVE} (extracted into {FOLDER}/ on first use)",
                ],
                f"Pass --download to fetch {REMOTES[ARCHIVE].url} (2.6 GB, MD5-checked) into {root}.",
            )
        folder = extract(archive, root, stl10_unlabeled)
    x_train = read_images(folder / "train_X.bin")
    y_train = read_labels(folder / "train_y.bin", len(x_train))
    x_test = read_images(folder / "test_X.bin")
    y_test = read_labels(folder / "test_y.bin", len(x_test))
    folds = read_folds(folder / "fold_indices.txt", len(x_train))
    x_unl = None
    if stl10_unlabeled:
        if not (folder / UNLABELED_FILE).is_file():
            raise DataError(
                f"stl10: {folder / UNLABELED_FILE} is missing (the 100,000 unlabeled images); "
                "extract it from stl10_binary.tar.gz beside the other files (FixMatch needs the unlabeled set)"
            )
        x_unl = read_images(folder / UNLABELED_FILE)
    if image_size is not None:
        if not isinstance(image_size, int) or image_size < 8:
            raise UserError(f"--image-size must be an integer >= 8, got {image_size!r}")
        x_train, x_test = resize(x_train, image_size), resize(x_test, image_size)
        x_unl = resize(x_unl, image_size) if x_unl is not None else None
    size = x_train.shape[-1]
    note = "" if size == SIDE else f"STL-10 test set at {size}x{size} (resized from 96 by --image-size)"
    return ImageDataset(
        "stl10",
        x_train,
        y_train,
        x_test,
        y_test,
        read_class_names(folder),
        x_unlabeled=x_unl,
        eval_note=note,
        fixed_splits=folds,
    )
