"""An upload: the one file of a multipart request, at most 1 MB, decoded within the decoding policy
(fixmatch/decoding.py: format by content, pixel and JPEG-scan bounds, a decode clock). Every
refusal is an ApiError with its status.
"""

from __future__ import annotations

from PIL import Image

from fixmatch.imaging.decoding import UPLOAD_FORMATS, ImageRefused, listing, open_image
from fixmatch.inference.page_upload import MAX_FILE_BYTES  # noqa: E402  (the page and predict follow it too)


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def too_large(size: int | None = None) -> ApiError:
    what = f"the file is {size:,} bytes" if size else "the upload is too large"
    return ApiError(
        413,
        f"{what}; the limit is 1 MB ({MAX_FILE_BYTES:,} bytes). Send a smaller or more compressed "
        f"{listing(UPLOAD_FORMATS)}.",
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


class RequestReadTimeout(Exception):
    """The client did not send its whole request (headers and body) within the server's read time."""


STATUS = {"format": 415, "pixels": 413, "cost": 422, "corrupt": 400}  # ImageRefused.kind -> HTTP status


def open_checked(data: bytes, draft=None) -> Image.Image:
    """An upload decoded within the decoding policy (decoding.py), or an ApiError with the status
    of the bound it broke: not an accepted format 415, too many pixels 413, too costly 422,
    corrupt 400. `draft(image)` may ask the decoder for a smaller size first."""
    try:
        return open_image(data, UPLOAD_FORMATS, draft)
    except ImageRefused as e:
        raise ApiError(STATUS[e.kind], e.message) from None
