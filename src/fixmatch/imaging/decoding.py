"""One decoding policy for every image this project reads: the server's uploads, `fixmatch predict`'s
files and the training folders (data/image_cache.py) all open images with open_image.

Before any pixel is decoded: the format is judged by the file's bytes (magic numbers), never its
name; the header's pixel count must be at most MAX_PIXELS (a small file can declare a huge image);
a JPEG's scans are counted the way libjpeg finds them (a progressive file can repeat thousands of
scans over the whole image: minutes of CPU for 1 MB). While decoding: the decoder pulls the file
through a clock, DECODE_SECONDS of this thread's CPU time (CPU, not wall time, so that a busy
machine does not refuse a file a quiet one reads; a refused training file is remembered). Every
refusal is an ImageRefused, a ValueError whose `kind` says which bound the file broke.
Torch-free (the server imports it).
"""

from __future__ import annotations

import io
import os
import stat
import time
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # above any phone camera; a 1 MB file claiming more is a decompression bomb
# libwebp decodes into buffers of its own that Pillow then copies: ~15 bytes a pixel at the peak
# against ~4 for PNG, BMP and the rest (measured, 40 MP: 615 MB vs 154 MB), so a WebP may declare a
# quarter of the pixels and its decode costs what a 40 MP PNG's does (4K frames, 8.3 MP, still fit).
MAX_PIXELS_OF = {"WEBP": MAX_PIXELS // 4}  # formats whose limit is not MAX_PIXELS
MAX_SCANS = 64  # encoders write 1 (baseline) to ~12 (progressive); each scan walks the whole image
MAX_SCAN_MEGAPIXELS = 600  # scans x megapixels: 15 scans of a 40 MP photo, ~0.5 s on one core
DECODE_SECONDS = 2.0  # CPU time of one decode
MAX_FILE_BYTES = 256 * 2**20  # 40 MP of 16-bit RGB stored raw is 240 MB; a larger file is not a photo
# TIFF: libtiff reads the file descriptor itself, so the clock is checked only after it is done.
# Its JPEG-in-TIFF tiles each decode a whole (possibly progressive) JPEG: unbounded cost, refused;
# other codecs stop when a tile is full, so their cost follows the pixel count, with a cap on tiles.
TIFF_JPEG = {6, 7, 34892}  # compression tag values: old-style JPEG, JPEG, lossy JPEG (DNG)
MAX_TIFF_SEGMENTS = 65_536  # tiles or strips (a 40 MP image in 256x256 tiles has 610)
READ_BLOCK = 1024  # the decoder reads this much at a time; the clock is checked between reads
MAGIC = {  # what a file starts with -> Pillow's format name
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"RIFF": "WEBP",  # RIFF....WEBP (checked in sniff)
    b"BM": "BMP",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    **{b"P%d" % n: "PPM" for n in range(1, 7)},
}
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")  # what the web page and API take (a browser shows them all)
FOLDER_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM")  # training folders and predict
NAMES = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP", "GIF": "GIF", "TIFF": "TIFF", "PPM": "PNM"}
STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}  # JPEG markers without a length: TEM, SOI, RSTn
SOS, EOI = 0xDA, 0xD9


class ImageRefused(ValueError):
    """A file the policy will not decode. kind: 'format', 'pixels', 'cost' or 'corrupt'."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


class DecodeTimeout(Exception):
    pass


def listing(formats) -> str:
    names = [NAMES[f] for f in formats]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def sniff(head: bytes, formats=FOLDER_FORMATS) -> str:
    for magic, kind in MAGIC.items():
        if head.startswith(magic) and kind in formats and (kind != "WEBP" or head[8:12] == b"WEBP"):
            return kind
    raise ImageRefused(
        "format", f"not an image in a format read here ({listing(formats)}; judged by the content, not the name)"
    )


def next_marker(data: bytes, i: int) -> tuple[int, int] | None:
    """libjpeg's next_marker from byte i: an FF, any fill FFs, then a byte that is not 00 (FF 00
    is a stuffed data byte) -> (the marker, the index after it), or None at the end of the data.
    bytes.find walks the data in C; Python only sees the FF bytes (~1 in 256 of entropy-coded data)."""
    while (j := data.find(b"\xff", i)) >= 0:
        k = j + 1
        while k < len(data) and data[k] == 0xFF:
            k += 1
        if k == len(data):
            return None
        if data[k]:
            return data[k], k + 1
        i = k + 1
    return None


def jpeg_scan_count(data: bytes, stop_after: int = MAX_SCANS) -> int:
    """Start-of-scan markers in a JPEG, found as libjpeg finds them: bytes where a marker should be
    are skipped up to the next one (libjpeg warns of "extraneous bytes" and reads on, so a single
    stray byte must not hide the scans after it); segments are skipped by their length; inside a
    scan's entropy-coded data a marker is FF followed by anything but 00 (stuffing) or FF (fill),
    and restart markers (RSTn) belong to the scan. Counting stops past `stop_after`."""
    count, i = 0, 2
    while (found := next_marker(data, i)) is not None:
        marker, i = found
        if marker == EOI:
            break
        if marker in STANDALONE:
            continue
        if marker == SOS:
            count += 1
            if count > stop_after:
                break
        i += int.from_bytes(data[i : i + 2], "big")  # the length counts its own two bytes
    return count


def check_cost(image: Image.Image, data: bytes | None) -> None:
    """The header's pixel count, and for a JPEG (its bytes in `data`; Pillow may call it MPO) the
    scans times the pixels."""
    width, height = image.size
    kind = image.format or ""
    limit = MAX_PIXELS_OF.get(kind, MAX_PIXELS)
    if width * height > limit:
        why = (
            f"for {NAMES[kind]} (its decoder needs about four times the memory per pixel of other "
            f"formats; a PNG or JPEG may have {MAX_PIXELS // 1_000_000}) "
            if limit != MAX_PIXELS
            else ""
        )
        raise ImageRefused(
            "pixels",
            f"the image declares {width}x{height} pixels; the limit {why}is {limit // 1_000_000} megapixels",
        )
    if data is not None:
        scans = jpeg_scan_count(data)
        if scans > MAX_SCANS or scans * width * height > MAX_SCAN_MEGAPIXELS * 1_000_000:
            raise ImageRefused(
                "cost",
                f"the JPEG has {'more than ' + str(MAX_SCANS) if scans > MAX_SCANS else scans} "
                f"scans over {width}x{height} pixels: too costly to decode. Re-save it "
                "as a baseline (non-progressive) JPEG or a PNG",
            )


class ClockedFile:
    """A file whose reads fail once this thread has spent `seconds` of CPU since it was made (the
    decoders pull the file through read(), READ_BLOCK at a time, so a slow decode stops within a block)."""

    def __init__(self, fp, seconds: float):
        self.fp, self.deadline = fp, time.thread_time() + seconds

    def read(self, size: int | None = -1) -> bytes:
        if time.thread_time() > self.deadline:
            raise DecodeTimeout()
        return self.fp.read(size)

    def __getattr__(self, name):  # seek, tell, readline...: the file's own
        return getattr(self.fp, name)


def open_image(source: bytes | str | Path, formats=FOLDER_FORMATS, draft=None, seconds: float | None = None):
    """Bytes or a file's path -> a decoded PIL image, within the policy, or ImageRefused (the kind
    and the reason). `draft(image)` may ask the decoder for a smaller size (JPEG's DCT scaling)
    after the checks. A missing file is FileNotFoundError, as open() says."""
    if isinstance(source, (bytes, bytearray)):
        check_file_size(len(source))
        return decode(io.BytesIO(source), sniff(bytes(source[:16]), formats), draft, seconds)
    check_regular_file(source)
    with open(source, "rb") as f:
        kind = sniff(f.read(16), formats)
        f.seek(0)
        if kind == "JPEG":  # its scans are counted in its bytes: read it whole
            return decode(io.BytesIO(f.read()), kind, draft, seconds)
        return decode(f, kind, draft, seconds)


def check_regular_file(path) -> None:
    """Before anything is read: a FIFO would block forever, a device never end; a huge file (a sparse
    3 GB one costs nothing to make) would be read whole."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ImageRefused("format", "not a regular file (a pipe, socket or device)")
    check_file_size(info.st_size)


def check_file_size(size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise ImageRefused(
            "pixels", f"the file holds {size / 2**20:,.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB for one image"
        )


def check_tiff(image: Image.Image) -> None:
    """The TIFF bounds the clock cannot enforce (libtiff decodes outside it)."""
    tags = getattr(image, "tag_v2", {})
    if tags.get(259) in TIFF_JPEG:
        raise ImageRefused(
            "cost",
            "a TIFF holding JPEG-compressed data is not decoded here (its decoder cannot be bounded); "
            "save the image as a JPEG or a PNG",
        )
    segments = len(tags.get(324) or tags.get(273) or ())  # TileOffsets, else StripOffsets
    if segments > MAX_TIFF_SEGMENTS:
        raise ImageRefused(
            "cost",
            f"the TIFF is cut into {segments:,} tiles or strips (the limit is {MAX_TIFF_SEGMENTS:,}); "
            "save the image as a PNG",
        )


def decode(fp, kind: str, draft, seconds: float | None) -> Image.Image:
    seconds = seconds or DECODE_SECONDS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(ClockedFile(fp, seconds), formats=[kind])
            check_cost(image, fp.getvalue() if kind == "JPEG" else None)
            if kind == "TIFF":
                check_tiff(image)
            image.decodermaxblock = READ_BLOCK
            if draft is not None:
                draft(image)
            image.load()
    except ImageRefused:
        raise
    except DecodeTimeout:
        raise ImageRefused(
            "cost",
            f"the image took more than {seconds:g} s of CPU to decode and was abandoned; "
            "send an ordinary photo (a baseline JPEG or a PNG)",
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRefused(
            "pixels", f"the image declares too many pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageRefused(
            "corrupt",
            f"the {NAMES[kind]} file is corrupt or truncated and cannot be decoded ({type(e).__name__})",
        ) from None
    return image


def failure_reason(path, error: BaseException) -> str:
    """Why a file could not be read, in the words train's skipped.txt and predict's error rows share."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
    except OSError:
        pass
    text = str(error).strip() or type(error).__name__
    if type(error).__name__ == "UnidentifiedImageError" or getattr(error, "kind", None) == "format":
        return "not an image (unknown format)"  # PIL's words, or the decoding policy's (ImageRefused)
    if type(error).__name__ == "ImageRefused":
        return text  # the policy's own sentence: too many pixels, too costly to decode, corrupt
    return f"{type(error).__name__}: {text}"
