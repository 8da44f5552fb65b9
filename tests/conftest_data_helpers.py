"""Helpers for tests/test_data.py: real pixels from the shared offline copies, cheaply.

Decompressing a whole shared .npz.xz takes ~10 s, but x_train is the first member of each
archive, so the first few images need only the first few hundred KB of the xz stream.
"""

from __future__ import annotations

import io
import lzma
import struct
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ZIP_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # the fixed 30 bytes before each member's name


def read_head(path: Path, n: int) -> np.ndarray:
    """The first n rows of the first array of an uncompressed .npz inside an .xz file."""
    dec, buf = lzma.LZMADecompressor(), b""
    with open(path, "rb") as f:
        def more(size):
            nonlocal buf
            while len(buf) < size:
                chunk = f.read(1 << 16)
                if not chunk:
                    raise ValueError(f"{path} ended early")
                buf += dec.decompress(chunk)

        more(4096)
        fields = ZIP_LOCAL_HEADER.unpack_from(buf)
        if fields[0] != b"PK\x03\x04" or fields[3] != 0:
            raise ValueError(f"{path}: first member is not a stored zip entry")
        npy = io.BytesIO(buf[ZIP_LOCAL_HEADER.size + fields[-2] + fields[-1]:])
        version = np.lib.format.read_magic(npy)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                 else np.lib.format.read_array_header_2_0)(npy)
        assert not fortran
        start = ZIP_LOCAL_HEADER.size + fields[-2] + fields[-1] + npy.tell()
        row = int(np.prod(shape[1:])) * dtype.itemsize
        more(start + n * row)
    return np.frombuffer(buf[start:start + n * row], dtype=dtype).reshape((n, *shape[1:]))
