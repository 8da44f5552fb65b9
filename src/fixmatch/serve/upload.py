"""Check an uploaded file before any pixel is decoded; every refusal is an ApiError with its status.

The file's bytes decide what it is (magic numbers), never its name or Content-Type, and the
pixel count is read from the header so a small file declaring a huge image is refused unopened.
Decoding is bounded twice: before (a JPEG's scans are counted: a progressive file can repeat
thousands of scans over the whole image, minutes of CPU for 1 MB) and while (the decoder reads
the file through a clock, DECODE_SECONDS at most).
"""

from __future__ import annotations

import io
import re
import time
import warnings

from PIL import Image, UnidentifiedImageError

MAX_FILE_BYTES = 1024 * 1024
MAX_PIXELS = 40_000_000  # above any phone camera; a 1 MB file claiming more is a decompression bomb
MAX_SCANS = 64  # encoders write 1 (baseline) to ~12 (progressive); each scan walks the whole image
MAX_SCAN_MEGAPIXELS = 600  # scans x megapixels: 15 scans of a 40 MP photo, ~0.5 s on one core
DECODE_SECONDS = 2.0  # wall-clock budget of one decode
READ_BLOCK = 1024  # the decoder reads this much at a time; the deadline is checked between reads
MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}
MARKER = re.compile(rb"\xff[\xc0-\xfe]")  # a JPEG marker; 0xFF00 (stuffing) and 0xFFFF (fill) are not


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def too_large(size: int | None = None) -> ApiError:
    what = f"the file is {size:,} bytes" if size else "the upload is too large"
    return ApiError(
        413, f"{what}; the limit is 1 MB ({MAX_FILE_BYTES:,} bytes). Send a smaller or more compressed JPEG or PNG."
    )


def read_upload(files) -> bytes:
    """The bytes of the one file sent as multipart field 'file' (at most MAX_FILE_BYTES)."""
    if "file" not in files:
        raise ApiError(400, "no file: send the image as multipart/form-data field 'file'")
    if len(files.getlist("file")) > 1 or len(files) > 1:
        raise ApiError(400, "send exactly one file per request")
    data = files["file"].read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise too_large(len(data) + len(files["file"].read()))
    if not data:
        raise ApiError(400, "the file is empty")
    return data


def sniff(data: bytes) -> str:
    for magic, kind in MAGIC.items():
        if data.startswith(magic):
            return kind
    raise ApiError(
        415, "not a JPEG or PNG image (judged by the file's content, not its name); send a .jpg or .png photo"
    )


def jpeg_scan_count(data: bytes) -> int:
    """Start-of-scan markers in a JPEG, found by walking its segments (headers are skipped by their
    length; inside entropy-coded data a marker is any 0xFF not followed by 0x00, 0xFF or a restart)."""
    count, i, n = 0, 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return count  # not a marker where one must be: the decoder will call it corrupt
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:  # end of image
            return count
        i += 4 + ((data[i + 2] << 8) | data[i + 3]) - 2
        if marker == 0xDA:
            count += 1
            if count > MAX_SCANS:
                return count
            while True:  # skip the entropy-coded data to the next marker that is not a restart
                m = MARKER.search(data, i)
                if m is None:
                    return count
                i = m.start()
                if not 0xD0 <= data[i + 1] <= 0xD7:
                    break
                i += 2
    return count


def check_decode_cost(image: Image.Image, data: bytes, kind: str) -> None:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ApiError(
            413, f"the image declares {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels"
        )
    if kind == "JPEG":
        scans = jpeg_scan_count(data)
        if scans > MAX_SCANS or scans * width * height > MAX_SCAN_MEGAPIXELS * 1_000_000:
            raise ApiError(
                422,
                f"the JPEG has {'more than ' + str(MAX_SCANS) if scans > MAX_SCANS else scans} "
                f"scans over {width}x{height} pixels: too costly to decode. Re-save it "
                "as a baseline (non-progressive) JPEG or a PNG",
            )


class DecodeTimeout(Exception):
    pass


class RequestReadTimeout(Exception):
    """The client did not send its whole request (headers and body) within the server's read time."""


class DeadlineReader(io.BytesIO):
    """The upload as a file whose reads fail once the decode deadline has passed (the decoders
    pull the file through read(), a block at a time, so a slow decode stops within one block)."""

    def __init__(self, data: bytes, seconds: float):
        super().__init__(data)
        self.deadline = time.monotonic() + seconds

    def read(self, size: int | None = -1) -> bytes:
        if time.monotonic() > self.deadline:
            raise DecodeTimeout()
        return super().read(size)


def open_checked(data: bytes, draft=None, seconds: float | None = None) -> Image.Image:
    """Header checks, then a full, timed decode; truncated or corrupt data is a 400, too many pixels
    a 413, too costly a decode a 422. `draft(image)` may ask the decoder for a smaller size first."""
    kind = sniff(data)
    seconds = seconds or DECODE_SECONDS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(DeadlineReader(data, seconds), formats=[kind])
            check_decode_cost(image, data, kind)
            image.decodermaxblock = READ_BLOCK
            if draft is not None:
                draft(image)
            image.load()
    except DecodeTimeout:
        raise ApiError(
            422,
            f"the image took more than {seconds:g} s to decode and was abandoned; "
            "send an ordinary photo (a baseline JPEG or a PNG)",
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(
            413, f"the image declares too many pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise ApiError(
            400, f"the {kind} file is corrupt or truncated and cannot be decoded ({type(e).__name__})"
        ) from None
    return image
