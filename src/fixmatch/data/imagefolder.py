"""Image files in class folders: `--dataset imagefolder` (root/train/<class>/, root/test/<class>/, one
size), and the readers the Kaggle FER2013 release uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fixmatch.data.arrays import dataset_from_arrays
from fixmatch.data.base import register
from fixmatch.data.download import missing_error, resolve_data_dir
from fixmatch.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

GRAY_MODES = {"1", "L"}


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name; hidden files (.DS_Store...) skipped."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def class_folders(split_dir: Path) -> dict[str, list[Path]]:
    """{class folder name: its image files} for every visible subfolder of split_dir."""
    return {d.name: list_images(d) for d in sorted(split_dir.iterdir()) if d.is_dir() and not d.name.startswith(".")}


def open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"cannot read image {path} ({e}); delete or replace it") from None


def common_mode(paths: list[Path]) -> str:
    """'L' when every image is greyscale, else 'RGB'. Only headers are read, so this is cheap."""
    for p in paths:
        with open_image(p) as im:
            if im.mode not in GRAY_MODES:
                return "RGB"
    return "L"


def read_images(paths: list[Path], mode: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode images to one uint8 array (N, H, W) or (N, H, W, 3); all must share one size
    (`size`, else that of the first image)."""
    ref = "the expected size is" if size else None  # what fixed the size, named in the error
    out = []
    for p in paths:
        with open_image(p) as im:
            if size is None:
                size, ref = im.size, f"{p} is"
            if im.size != size:
                raise DataError(
                    f"image {p} is {im.size[0]}x{im.size[1]} but {ref} {size[0]}x{size[1]}; "
                    "all images must have one size (resize them)"
                )
            try:
                out.append(np.asarray(im.convert(mode), dtype=np.uint8))
            except (OSError, ValueError) as e:  # truncated or undecodable pixel data
                raise DataError(f"cannot decode image {p} ({e}); delete or replace it") from None
    return np.stack(out)


@register(
    "image files in root/train/<class>/ and root/test/<class>/ (all one size)",
    defaults={},
    files="train/<class>/*.png|jpg and test/<class>/*.png|jpg",
)
def load_imagefolder(data_dir=None, **_):
    root = resolve_data_dir(data_dir)
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise missing_error(
            "imagefolder",
            root,
            ["train/<class>/<image files> and test/<class>/<image files>"],
            "Create one subfolder per class in both; class names come from train/.",
        )
    train, test = class_folders(root / "train"), class_folders(root / "test")
    classes = sorted(train)
    unknown = sorted(set(test) - set(train))
    if unknown:
        raise DataError(
            f"imagefolder: {root / 'test'} has class folders missing from {root / 'train'}: {', '.join(unknown)}"
        )
    splits = []
    for split, folders in (("train", train), ("test", test)):
        paths = [p for c in classes for p in folders.get(c, [])]
        labels = np.array([i for i, c in enumerate(classes) for _ in folders.get(c, [])], dtype=np.int64)
        if not paths:
            raise DataError(
                f"imagefolder: no image files under {root / split}/<class>/ "
                f"(accepted: {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        splits.append((paths, labels))
    mode = common_mode(splits[0][0] + splits[1][0])
    x_train = read_images(splits[0][0], mode)
    x_test = read_images(splits[1][0], mode, size=(x_train.shape[2], x_train.shape[1]))
    return dataset_from_arrays("imagefolder", root, x_train, splits[0][1], x_test, splits[1][1], classes)
