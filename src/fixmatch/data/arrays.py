"""Arrays to an ImageDataset, with the file they came from named in every error."""

from __future__ import annotations

import numpy as np

from fixmatch.data.base import from_numpy
from fixmatch.errors import DataError


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
