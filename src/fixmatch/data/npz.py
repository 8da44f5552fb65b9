"""The .npz format: any archive with x_train, y_train, x_test, y_test (`--dataset npz`), and the
xz-compressed .npz files (CIFAR-10, FER2013) the CIFAR and FER2013 loaders also read."""

from __future__ import annotations

import contextlib
import io
import lzma
import zipfile
from pathlib import Path

import numpy as np

from fixmatch.data.arrays import dataset_from_arrays, integer_labels, require_keys
from fixmatch.data.base import register
from fixmatch.data.download import resolve_data_dir
from fixmatch.errors import DataError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


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
    """An .npz that was compressed as a whole with xz (cifar10_*.npz.xz, fer2013.npz.xz)."""
    try:
        with lzma.open(path) as f:
            raw = f.read()
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise DataError(f"{path} is not a readable .xz file ({e}); replace the file") from None
    return read_npz(io.BytesIO(raw), label=path)


def find_npz(data_dir) -> Path:
    """data_dir may be the .npz itself or a folder holding exactly one."""
    path = resolve_data_dir(data_dir)
    if path.is_file():
        return path
    found = sorted(path.glob("*.npz")) if path.is_dir() else []
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
        raise DataError(
            f"npz: {path} holds {what} .npz files; pass --data-dir the path of one .npz "
            f"with arrays {', '.join(NPZ_KEYS)} (optional class_names)"
        )
    return found[0]


@register(
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
