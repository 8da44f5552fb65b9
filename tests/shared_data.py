"""Real pixels from the development data folder, cheaply, for every test that needs them: $FIXMATCH_DATA
when it is set, else ../shared/data beside the checkout (the product itself never looks there).

Decompressing a whole shared .npz.xz takes ~10 s, but x_train is the first member of each
archive, so the first few images need only the first few hundred KB of the xz stream.
"""

from __future__ import annotations

import lzma
import os
import struct
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(os.environ.get("FIXMATCH_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
ZIP_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # the fixed 30 bytes before each member's name


def read_npy_member(f, rows: int, skip_rest: bool = True) -> np.ndarray:
    """From a stream at a zip local header: the first `rows` of that stored .npy. With `skip_rest`
    the stream is left at the next member's header (decompressing through the rest of this one)."""
    fields = ZIP_LOCAL_HEADER.unpack(f.read(ZIP_LOCAL_HEADER.size))
    if fields[0] != b"PK\x03\x04" or fields[3] != 0:
        raise ValueError("expected a stored zip member")
    f.read(fields[-2] + fields[-1])  # name and extra field
    version = np.lib.format.read_magic(f)
    shape, fortran, dtype = (
        np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    )(f)
    assert not fortran
    row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    head = np.frombuffer(f.read(rows * row), dtype=dtype).reshape((rows, *shape[1:]))
    if skip_rest:
        f.seek(f.tell() + (shape[0] - rows) * row)
    return head


def read_head(path: Path, n: int) -> np.ndarray:
    """The first n rows of the first array (x_train) of an uncompressed .npz inside an .xz file."""
    with lzma.open(path) as f:
        return read_npy_member(f, n, skip_rest=False)


needs_shared_data = pytest.mark.skipif(
    not (SHARED / "fer2013.npz.xz").is_file() or not (SHARED / "cifar10_device.npz.xz").is_file(),
    reason=f"fer2013.npz.xz and cifar10_device.npz.xz not found in {SHARED} (set FIXMATCH_DATA)",
)


def cifar_images(n: int) -> np.ndarray:
    """The first n CIFAR-10 training images of the offline copy, (n, 32, 32, 3) uint8."""
    return read_head(SHARED / "cifar10_device.npz.xz", n).copy()


def fer_faces(n: int) -> np.ndarray:
    """The first n FER2013 Training faces (fer2013.csv rows 0..n-1), (n, 48, 48) uint8."""
    return read_head(SHARED / "fer2013.npz.xz", n)[..., 0].copy()


def fer_private_test(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first n (default all 3,589) FER2013 PrivateTest faces (48, 48) uint8 and labels, in the
    archive's order. The archive's members run x_train, y_train, x_test, y_test, test_usage (1 =
    PrivateTest): the training images are streamed past (~5 s of xz), the test arrays read whole."""
    with lzma.open(SHARED / "fer2013.npz.xz") as f:
        read_npy_member(f, 0)
        read_npy_member(f, 0)
        x = _whole(f)
        y = _whole(f)
        usage = _whole(f)
    private = np.flatnonzero(usage == 1)[:n]
    return x[private][..., 0].copy(), y[private].astype(np.int64)


def _whole(f) -> np.ndarray:
    """The whole .npy member at the stream's position (its row count read from its header)."""
    fields = ZIP_LOCAL_HEADER.unpack(f.read(ZIP_LOCAL_HEADER.size))
    if fields[0] != b"PK\x03\x04" or fields[3] != 0:
        raise ValueError("expected a stored zip member")
    f.read(fields[-2] + fields[-1])
    return np.lib.format.read_array(f, allow_pickle=False)
