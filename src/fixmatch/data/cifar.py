"""CIFAR-10 and CIFAR-100 from the official "python version" pickles (a folder or the .tar.gz),
or, for CIFAR-10, two xz-compressed .npz files (cifar10_device.npz.xz + cifar10_rest.npz.xz)."""

from __future__ import annotations

import io
import pickle
import sys
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fixmatch.data.arrays import dataset_from_arrays, integer_labels, require_keys
from fixmatch.data.base import register
from fixmatch.data.download import fetch, missing_error, resolve_data_dir
from fixmatch.data.npz import read_npz_xz
from fixmatch.errors import DataError

OFFLINE_FILES = ("cifar10_device.npz.xz", "cifar10_rest.npz.xz")
DEFAULT_CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# A pickle may call any importable function; CIFAR batches need only these to rebuild numpy arrays.
SAFE_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


@dataclass(frozen=True)
class Layout:
    """Where one CIFAR variant keeps its batches and which pickle entries hold labels and names."""

    name: str
    folder: str
    archive: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str

    @property
    def all_files(self) -> tuple[str, ...]:
        return self.train_files + self.test_files + (self.meta_file,)


CIFAR10 = Layout(
    "cifar10",
    "cifar-10-batches-py",
    "cifar-10-python.tar.gz",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",),
    "batches.meta",
    "labels",
    "label_names",
)
CIFAR100 = Layout(
    "cifar100",
    "cifar-100-python",
    "cifar-100-python.tar.gz",
    ("train",),
    ("test",),
    "meta",
    "fine_labels",
    "fine_label_names",
)


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        canonical = module.replace("numpy.core", "numpy._core", 1)  # the originals predate numpy 2
        if (canonical, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        try:
            return super().find_class(canonical, name)
        except (ImportError, AttributeError):  # numpy older than 1.26 has no numpy._core
            return super().find_class(module, name)


def unpickle(fileobj, label) -> dict:
    """A CIFAR pickle as a dict with str keys (the originals are Python 2 pickles with bytes keys)."""
    try:
        d = _ArrayUnpickler(fileobj, encoding="bytes").load()
    except Exception as e:  # a damaged pickle can fail in many ways (EOF, bad opcode, bad array...)
        raise DataError(
            f"{label} is not a readable CIFAR pickle ({type(e).__name__}: {e}); "
            "replace the file (re-download or re-extract it)"
        ) from None
    if not isinstance(d, dict):
        raise DataError(f"{label} is not a CIFAR pickle (holds a {type(d).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def read_batch(fileobj, label, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """One batch: rows of 3072 bytes (1024 red, 1024 green, 1024 blue, row-major) -> NHWC."""
    d = unpickle(fileobj, label)
    if "data" not in d or layout.label_key not in d:
        raise DataError(f"{label} lacks the 'data' or '{layout.label_key}' entry; it is not a {layout.name} batch")
    x, y = np.asarray(d["data"]), integer_labels(d[layout.label_key], layout.label_key, label)
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or y.shape != (len(x),):
        raise DataError(
            f"{label}: expected 'data' (N, 3072) uint8 and N labels, got {x.dtype} "
            f"{x.shape} and {y.shape} labels; the file is damaged"
        )
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y


def read_names(fileobj, label, layout: Layout) -> list[str]:
    d = unpickle(fileobj, label)
    if layout.names_key not in d:
        raise DataError(f"{label} lacks the '{layout.names_key}' entry; it is not the {layout.name} meta file")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in d[layout.names_key]]


def build(layout: Layout, open_member, where: Path):
    """The dataset from its pickles; open_member(name) gives a binary file object for each."""
    parts = {}
    for split, files in (("train", layout.train_files), ("test", layout.test_files)):
        batches = [read_batch(open_member(f), where / f, layout) for f in files]
        parts[split] = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    names = read_names(open_member(layout.meta_file), where / layout.meta_file, layout)
    return dataset_from_arrays(layout.name, where, *parts["train"], *parts["test"], names)


def load_folder(layout: Layout, folder: Path):
    def open_member(name):
        try:
            return io.BytesIO((folder / name).read_bytes())
        except FileNotFoundError:
            raise DataError(
                f"{layout.name}: {folder / name} is missing; {folder} must hold {', '.join(layout.all_files)}"
            ) from None

    return build(layout, open_member, folder)


def load_archive(layout: Layout, path: Path):
    """Read the wanted members straight from the .tar.gz in one sequential pass (no extraction)."""
    blobs = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                member_file = tar.extractfile(member) if member.isfile() else None
                if member_file is not None and base in layout.all_files:
                    blobs[base] = member_file.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path} is not a readable .tar.gz ({e}); delete it and download it again") from None

    def open_member(name):
        if name not in blobs:
            raise DataError(f"{path} lacks {layout.folder}/{name}; it is not the official {layout.archive}")
        return io.BytesIO(blobs[name])

    return build(layout, open_member, path)


def load_offline(root: Path):
    """The project's xz-compressed CIFAR-10 copy; the 'rest' file adds 29,000 training images."""
    device, rest = (root / f for f in OFFLINE_FILES)
    parts = [read_npz_xz(device)]
    if rest.is_file():
        parts.append(read_npz_xz(rest))
    else:
        print(f"warning: {rest} not found; training on the 21,000 images of {device.name} only", file=sys.stderr)
    require_keys(parts[0], ("x_train", "y_train", "x_test", "y_test"), device)
    for part, f in zip(parts[1:], OFFLINE_FILES[1:]):
        require_keys(part, ("x_train", "y_train"), root / f)
    x = np.concatenate([p["x_train"] for p in parts])
    y = np.concatenate([integer_labels(p["y_train"], "y_train", device) for p in parts])
    if all("file_index_train" in p for p in parts):  # canonical order: by class, then source file
        order = np.lexsort((np.concatenate([p["file_index_train"] for p in parts]), y))
        x, y = x[order], y[order]
    names = parts[0].get("class_names", np.array(DEFAULT_CIFAR10_NAMES))
    y_test = integer_labels(parts[0]["y_test"], "y_test", device)
    return dataset_from_arrays("cifar10", device, x, y, parts[0]["x_test"], y_test, [str(n) for n in names])


def load_cifar(layout: Layout, data_dir, download: bool):
    root = resolve_data_dir(data_dir)
    if (root / layout.folder).is_dir():
        return load_folder(layout, root / layout.folder)
    if (root / layout.archive).is_file():
        return load_archive(layout, root / layout.archive)
    if layout is CIFAR10 and (root / OFFLINE_FILES[0]).is_file():
        return load_offline(root)
    if download:
        return load_archive(layout, fetch(layout.archive, root))
    layouts = [f"{layout.folder}/ with {', '.join(layout.all_files)}", layout.archive]
    if layout is CIFAR10:
        layouts.append(" + ".join(OFFLINE_FILES) + " (xz-compressed .npz arrays)")
    raise missing_error(
        layout.name,
        root,
        layouts,
        f"Pass --download to fetch {layout.archive} into {root}, or --data-dir to point elsewhere.",
        files=(layout.folder, layout.archive, *(OFFLINE_FILES if layout is CIFAR10 else ())),
    )


@register(
    "CIFAR-10, 32x32 RGB, 10 classes, 50,000 train / 10,000 test",
    defaults={},  # the paper recipe (config.PAPER_DEFAULTS) as it is
    files="cifar-10-batches-py/ or cifar-10-python.tar.gz (--download), or cifar10_device.npz.xz + cifar10_rest.npz.xz",
)
def load_cifar10(data_dir=None, download=False, **_):
    return load_cifar(CIFAR10, data_dir, download)


@register(
    "CIFAR-100 (fine labels), 32x32 RGB, 100 classes, 50,000 train / 10,000 test",
    defaults=dict(model="wrn28_8", num_labels=10000, weight_decay=1e-3),  # the paper's CIFAR-100 settings
    files="cifar-100-python/ or cifar-100-python.tar.gz (--download)",
)
def load_cifar100(data_dir=None, download=False, **_):
    return load_cifar(CIFAR100, data_dir, download)
