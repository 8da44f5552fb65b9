"""Labeled subsets chosen as the official `scripts/create_split.py` does, saved as JSON so a run can be
repeated exactly.

Official algorithm, given the training records in their distribution order: the indices of each
class in record order; for a seed other than 0, numpy's legacy generator seeded with it shuffles each
class's list in class order; then labels are handed out one at a time, each to the class whose share
of labels lags most behind its share of the training set (class counts / the largest count). CIFAR
(balanced) gets num_labels/K per class; SVHN gets labels in proportion to its class frequencies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fixmatch.errors import UserError
from fixmatch.outputs import write_text_atomic


def official_labeled_indices(labels, num_labels: int, seed: int) -> np.ndarray:
    """The labeled indices of the official `<dataset>.<seed>@<num_labels>` split, sorted."""
    labels = np.asarray(labels)
    if num_labels <= 0:
        raise UserError(f"num_labels must be positive, got {num_labels}")
    if num_labels > len(labels):
        raise UserError(f"num_labels={num_labels} exceeds the {len(labels)} training images")
    num_classes = int(labels.max()) + 1
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    share = np.array([len(ids) for ids in by_class], np.float64)
    share /= share.max()
    if seed:
        rng = np.random.RandomState(seed)  # == np.random.seed(seed) + np.random.shuffle, class by class
        for ids in by_class:
            rng.shuffle(ids)
    taken = np.zeros(num_classes, np.int64)
    picked = []
    for _ in range(num_labels):
        c = int(np.argmax(share - taken / max(taken.max(), 1)))
        if taken[c] == len(by_class[c]):
            raise UserError(
                f"class {c} has only {len(by_class[c])} training images, too few for "
                f"num_labels={num_labels} spread like the training set"
            )
        picked.append(by_class[c][taken[c]])
        taken[c] += 1
    return np.sort(np.array(picked, np.int64))


def save_split(path: str | Path, labeled: np.ndarray, meta: dict) -> None:
    write_text_atomic(path, json.dumps({**meta, "labeled": [int(i) for i in labeled]}, indent=1))


def load_split(path: str | Path, num_train: int) -> np.ndarray:
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
