"""The in-memory dataset every loader returns, and the registry loaders add themselves to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from fixmatch.errors import DataError


@dataclass
class ImageDataset:
    """Train and test images held as uint8 tensors of shape (N, C, H, W), labels as int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: list[str]
    # Images without labels (a user's unlabeled folder, STL-10's 100k): appended to the unlabeled
    # pool after the whole train split, which stays in the pool as in the official code.
    x_unlabeled: torch.Tensor | None = None
    skipped: list = field(default_factory=list)  # (path, reason) of unreadable files the loader left out
    eval_note: str = ""  # what the test split is, when it is not a dataset's official test set
    fixed_splits: dict | None = None  # fold -> labeled indices into x_train (STL-10's predefined folds)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images in 0..1 units (used to normalize).
        Summed in chunks in float64: SVHN with 'extra' would need 7 GB as one float tensor."""
        total = torch.zeros(self.x_train.shape[1], dtype=torch.float64)
        squares = torch.zeros_like(total)
        for chunk in self.x_train.split(8192):
            x = chunk.to(torch.float64).div_(255)
            total += x.sum(dim=(0, 2, 3))
            squares += x.square_().sum(dim=(0, 2, 3))
        n = self.x_train.shape[0] * self.x_train.shape[2] * self.x_train.shape[3]
        mean = total / n
        std = (squares / n - mean.square()).mul_(n / max(n - 1, 1)).sqrt_().clamp_min(1e-3)
        return mean.float().tolist(), std.float().tolist()


def from_numpy(name: str, x_train, y_train, x_test, y_test, class_names) -> ImageDataset:
    """Build an ImageDataset from NHWC (or NHW) uint8 arrays, checking shapes and label ranges."""
    xs = []
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        x = np.asarray(x)
        y = np.asarray(y)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise DataError(f"{name}: x_{split} must be (N, H, W) or (N, H, W, 1|3) images, got shape {x.shape}")
        if x.dtype != np.uint8:
            raise DataError(f"{name}: x_{split} must be uint8 pixels 0..255, got dtype {x.dtype}")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{name}: y_{split} must be a vector of {len(x)} labels, got shape {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= len(class_names)):
            raise DataError(
                f"{name}: y_{split} labels must lie in 0..{len(class_names) - 1}, got {int(y.min())}..{int(y.max())}"
            )
        xs.append(
            (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y.astype(np.int64)))
        )
    (xtr, ytr), (xte, yte) = xs
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(
            f"{name}: train images {tuple(xtr.shape[1:])} and test images {tuple(xte.shape[1:])} differ in shape"
        )
    return ImageDataset(name, xtr, ytr, xte, yte, [str(c) for c in class_names])


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: how to load it and the training defaults that suit it."""

    name: str
    loader: Callable[..., ImageDataset]  # loader(data_dir, **options) -> ImageDataset
    description: str
    defaults: dict = field(default_factory=dict)  # TrainConfig fields this dataset overrides
    files: str = ""  # what `fixmatch datasets` says must be in data_dir
    framing: str = "resize"  # how predict/serve frame a photo for its models (inference.preprocess.FRAMINGS)


DATASETS: dict[str, DatasetSpec] = {}


def register(description: str, defaults: dict | None = None, files: str = "", framing: str = "resize"):
    """Decorator: add a loader `load_<name>` to the dataset registry as <name>; a name taken twice is
    a mistake, not a replacement."""

    def wrap(fn):
        name = fn.__name__.removeprefix("load_")
        if name in DATASETS:
            raise ValueError(f"two datasets are named {name!r}: {DATASETS[name].loader.__module__} and {fn.__module__}")
        DATASETS[name] = DatasetSpec(name, fn, description, defaults or {}, files, framing)
        return fn

    return wrap
