"""What the demo page uploads for a file, restated for `fixmatch predict`: the file itself, or, when
it is over the server's limit, the copy static/app.js (shrinkIfTooLarge) makes: the upright image
drawn on a canvas at SEND_SIDE on its longest side, encoded as a JPEG at the first of
SEND_QUALITIES that fits. predict frames that copy too, so a big photo gets the page's answer.

Why predict copies the page, and not the other way round: the page cannot send the file (the
server takes 1 MB at most) and cannot send what predict would decode from it, so the two can only
meet on the page's copy. PIL stands in for the browser's canvas (antialiased bilinear; the
browser's own filter and JPEG encoder differ by about 1.4 grey levels on average, measured with
Chromium), which is far closer than framing the full-size file: the face box, its crop and the
JPEG's loss are the page's. The constants are written here once; the page reads them from the
template. Torch-free."""

from __future__ import annotations

import io
import math
import os

from PIL import Image, ImageOps

from fixmatch.inference.preprocess import eight_bit

SEND_SIDE = 1280  # the longest side of the page's copy of a photo over the limit
SEND_QUALITIES = (0.9, 0.8, 0.6)  # canvas.toBlob's JPEG qualities, tried in turn until one fits
DRAWABLE = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP"})  # others the page sends as they are

MAX_FILE_BYTES = 1024 * 1024  # the server's upload limit (serve/upload.py): a photo over it is sent shrunk


def page_settings() -> dict:
    """The constants the page's script reads (data attributes of the page's body)."""
    return {"upload_limit": MAX_FILE_BYTES, "send_side": SEND_SIDE, "send_qualities": list(SEND_QUALITIES)}


def send_size(width: int, height: int) -> tuple[int, int]:
    """The canvas size: scale = min(1, SEND_SIDE / longest side), each side Math.round-ed (half up)."""
    scale = min(1.0, SEND_SIDE / max(width, height))
    return max(1, math.floor(width * scale + 0.5)), max(1, math.floor(height * scale + 0.5))


def drawn(image: Image.Image) -> Image.Image:
    """The image as a canvas holds it: 8 bits, upright (the browser applies the EXIF orientation),
    RGB; transparent pixels are transparent black on the canvas, black in its JPEG."""
    image = ImageOps.exif_transpose(eight_bit(image))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return image.convert("RGB")


def page_copy(path) -> bytes | None:
    """The JPEG the page sends instead of the file at `path`, or None when it sends the file itself
    (at most the limit, a format the browser cannot draw, or no quality fits: then the server
    refuses the upload, and predict frames the file)."""
    if os.path.getsize(path) <= MAX_FILE_BYTES:
        return None
    with Image.open(path) as image:
        if image.format not in DRAWABLE:
            return None
        image.load()
        canvas = drawn(image)
    canvas = canvas.resize(send_size(*canvas.size), Image.Resampling.BILINEAR)
    for quality in SEND_QUALITIES:
        buf = io.BytesIO()
        canvas.save(buf, "JPEG", quality=round(quality * 100))
        if buf.tell() <= MAX_FILE_BYTES:
            return buf.getvalue()
    return None
