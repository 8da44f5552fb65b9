"""Check an uploaded file before any pixel is decoded; every refusal is an ApiError with its status.

The file's bytes decide what it is (magic numbers), never its name or Content-Type, and the
pixel count is read from the header so a small file declaring a huge image is refused unopened.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

MAX_FILE_BYTES = 1024 * 1024
MAX_PIXELS = 40_000_000  # above any phone camera; a 1 MB file claiming more is a decompression bomb
MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def too_large(size: int | None = None) -> ApiError:
    what = f"the file is {size / 2**20:.1f} MB" if size else "the upload is too large"
    return ApiError(413, f"{what}; the limit is 1 MB. Send a smaller or more compressed JPEG or PNG.")


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
    raise ApiError(415, "not a JPEG or PNG image (judged by the file's content, not its name); "
                        "send a .jpg or .png photo")


def open_checked(data: bytes) -> Image.Image:
    """Header checks, then a full decode; truncated or corrupt data is a 400, too many pixels a 413."""
    kind = sniff(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[kind])
            if image.width * image.height > MAX_PIXELS:
                raise ApiError(413, f"the image declares {image.width}x{image.height} pixels; the limit is "
                                    f"{MAX_PIXELS // 1_000_000} megapixels")
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, f"the image declares too many pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise ApiError(400, f"the {kind} file is corrupt or truncated and cannot be decoded "
                            f"({type(e).__name__})") from None
    return image
