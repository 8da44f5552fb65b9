"""Seeded, class-balanced labeled subsets, saved as JSON so a run can be repeated exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fixmatch.errors import UserError


def split_seed(seed: int, fold: int) -> int:
    """The seed that picks the labels: fold 1..5 gives distinct splits, like `cifar10.3@40-1`."""
    return seed * 1000 + fold


def balanced_labeled_indices(labels, num_labels: int, num_classes: int, seed: int) -> np.ndarray:
    """num_labels / num_classes images of each class, drawn without replacement, sorted."""
    labels = np.asarray(labels)
    if num_labels <= 0:
        raise UserError(f"num_labels must be positive, got {num_labels}")
    if num_labels > len(labels):
        raise UserError(f"num_labels={num_labels} exceeds the {len(labels)} training images")
    if num_labels == len(labels):  # every image labeled (e.g. the FER2013 release)
        return np.arange(len(labels))
    if num_labels % num_classes:
        raise UserError(f"num_labels={num_labels} must be a multiple of the {num_classes} classes "
                        "(class-balanced split)")
    per_class = num_labels // num_classes
    rng = np.random.RandomState(seed)
    picked = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise UserError(f"class {c} has only {len(idx)} training images; {per_class} per class "
                            f"are needed for num_labels={num_labels}")
        picked.append(rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(picked))


def save_split(path: Path, labeled: np.ndarray, meta: dict) -> None:
    Path(path).write_text(json.dumps({**meta, "labeled": [int(i) for i in labeled]}, indent=1))


def load_split(path: Path, num_train: int) -> np.ndarray:
    try:
        data = json.loads(Path(path).read_text())
        idx = np.asarray(data["labeled"], dtype=np.int64)
    except FileNotFoundError:
        raise UserError(f"split file not found: {path}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"split file {path} is not a fixmatch split JSON ({e})") from None
    if idx.ndim != 1 or len(idx) == 0 or idx.min() < 0 or idx.max() >= num_train:
        raise UserError(f"split file {path} has indices outside 0..{num_train - 1}")
    return idx
