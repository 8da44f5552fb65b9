"""Generic on-disk formats: .npz archives (plain or xz-compressed) and train/test image folders.

The readers here are shared by the named datasets (CIFAR-10's and FER2013's offline copies are
.npz.xz files; the Kaggle FER2013 release is an image folder).
"""

from __future__ import annotations

import contextlib
import io
import lzma
import zipfile
from pathlib import Path

import numpy as np

from fixmatch.data.base import from_numpy, register
from fixmatch.data.download import missing_error, resolve_data_dir
from fixmatch.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
GRAY_MODES = {"1", "L"}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


# ---------------------------------------------------------------- npz archives

def read_npz(source, label=None) -> dict[str, np.ndarray]:
    """All arrays of an .npz (path or file object). No pickles: a data file must not run code."""
    label = label or source
    try:
        with contextlib.ExitStack() as stack:
            # opened here, not by np.load, which leaks the handle when the zip is damaged
            f = stack.enter_context(open(source, "rb")) if isinstance(source, (str, Path)) else source
            z = np.load(f, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("it holds one bare array, not named arrays")
            with z:
                return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"file not found: {label}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        # numpy takes any file that is neither zip nor .npy for a pickle, and advises allow_pickle: never
        why = "its bytes are not a zip archive of arrays" if "allow_pickle" in str(e) else str(e)
        raise DataError(f"{label} is not a readable .npz archive ({why}); replace the file") from None


def read_npz_xz(path: Path) -> dict[str, np.ndarray]:
    """An .npz that was compressed as a whole with xz (the project's offline copies)."""
    try:
        with lzma.open(path) as f:
            raw = f.read()
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise DataError(f"{path} is not a readable .xz file ({e}); replace the file") from None
    return read_npz(io.BytesIO(raw), label=path)


def require_keys(d: dict, keys, path) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise DataError(f"{path} lacks the arrays {', '.join(missing)} (has: {', '.join(sorted(d)) or 'none'})")


def integer_labels(y, key: str, path) -> np.ndarray:
    """Labels as int64, refusing float/str arrays that a cast would silently mangle."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {key} must hold integer class indices, got dtype {y.dtype}")
    return y.astype(np.int64)


def dataset_from_arrays(name: str, path, x_train, y_train, x_test, y_test, class_names):
    """from_numpy, with the source file named in any shape/label error it raises."""
    try:
        return from_numpy(name, x_train, y_train, x_test, y_test, class_names)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None


# ---------------------------------------------------------------- image files

def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name; hidden files (.DS_Store...) skipped."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def class_folders(split_dir: Path) -> dict[str, list[Path]]:
    """{class folder name: its image files} for every visible subfolder of split_dir."""
    return {d.name: list_images(d) for d in sorted(split_dir.iterdir())
            if d.is_dir() and not d.name.startswith(".")}


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
                raise DataError(f"image {p} is {im.size[0]}x{im.size[1]} but {ref} {size[0]}x{size[1]}; "
                                "all images must have one size (resize them)")
            try:
                out.append(np.asarray(im.convert(mode), dtype=np.uint8))
            except (OSError, ValueError) as e:  # truncated or undecodable pixel data
                raise DataError(f"cannot decode image {p} ({e}); delete or replace it") from None
    return np.stack(out)


# ---------------------------------------------------------------- registered datasets

def find_npz(data_dir) -> Path:
    """data_dir may be the .npz itself or a folder holding exactly one."""
    path = resolve_data_dir(data_dir)
    if path.is_file():
        return path
    found = sorted(path.glob("*.npz")) if path.is_dir() else []
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
        raise DataError(f"npz: {path} holds {what} .npz files; pass --data-dir the path of one .npz "
                        f"with arrays {', '.join(NPZ_KEYS)} (optional class_names)")
    return found[0]


@register(
    "npz",
    "any .npz with x_train, y_train, x_test, y_test (NHWC or NHW uint8), optional class_names",
    defaults={},
    files="the .npz file itself (or a folder holding exactly one)",
)
def load_npz(data_dir=None, **_):
    path = find_npz(data_dir)
    d = read_npz(path)
    require_keys(d, NPZ_KEYS, path)
    y_train = integer_labels(d["y_train"], "y_train", path)
    y_test = integer_labels(d["y_test"], "y_test", path)
    if "class_names" in d:
        names = [str(c) for c in np.asarray(d["class_names"]).ravel()]
    else:  # no names stored: classes are the label numbers seen
        top = max([int(y.max()) for y in (y_train, y_test) if len(y)], default=0)
        names = [str(i) for i in range(top + 1)]
    return dataset_from_arrays("npz", path, d["x_train"], y_train, d["x_test"], y_test, names)


@register(
    "imagefolder",
    "image files in root/train/<class>/ and root/test/<class>/ (all one size)",
    defaults={},
    files="train/<class>/*.png|jpg and test/<class>/*.png|jpg",
)
def load_imagefolder(data_dir=None, **_):
    root = resolve_data_dir(data_dir)
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise missing_error("imagefolder", root, ["train/<class>/<image files> and test/<class>/<image files>"],
                            "Create one subfolder per class in both; class names come from train/.")
    train, test = class_folders(root / "train"), class_folders(root / "test")
    classes = sorted(train)
    unknown = sorted(set(test) - set(train))
    if unknown:
        raise DataError(f"imagefolder: {root / 'test'} has class folders missing from {root / 'train'}: "
                        f"{', '.join(unknown)}")
    splits = []
    for split, folders in (("train", train), ("test", test)):
        paths = [p for c in classes for p in folders.get(c, [])]
        labels = np.array([i for i, c in enumerate(classes) for _ in folders.get(c, [])], dtype=np.int64)
        if not paths:
            raise DataError(f"imagefolder: no image files under {root / split}/<class>/ "
                            f"(accepted: {', '.join(sorted(IMAGE_SUFFIXES))})")
        splits.append((paths, labels))
    mode = common_mode(splits[0][0] + splits[1][0])
    x_train = read_images(splits[0][0], mode)
    x_test = read_images(splits[1][0], mode, size=(x_train.shape[2], x_train.shape[1]))
    return dataset_from_arrays("imagefolder", root, x_train, splits[0][1], x_test, splits[1][1], classes)
