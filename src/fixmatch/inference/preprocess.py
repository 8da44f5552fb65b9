"""One way from a photo to the model's input, for the web page and `fixmatch predict` alike.

A model says how its inputs were framed (meta["preprocess"]): "face" (FER2013: the largest
frontal face, cropped like the dataset's, see face.py) or "resize" (the whole image resized to the
input size, what every other dataset's images are). Files written before the key existed are
"face" exactly when they were trained on fer2013. Torch-free: the server's ONNX path never needs it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from fixmatch.imaging.decoding import FOLDER_FORMATS, open_image
from fixmatch.imaging.framing import draft_for_square, square

WORKING_SIDE = 1280  # big JPEGs are decoded straight to about this size (libjpeg's DCT scaling)
FRAMINGS = ("face", "resize", "crop")
SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}  # 16-bit grey PNGs open as one of these
BAND = 64  # rows converted at a time from 16 to 8 bits


def framing(meta: dict) -> str:
    kind = meta.get("preprocess") or ("face" if meta.get("dataset") == "fer2013" else "resize")
    return kind if kind in FRAMINGS else "resize"


def draft(image: Image.Image, meta: dict) -> None:
    """Ask a JPEG decoder for a copy at least WORKING_SIDE on its longest side (1/2, 1/4 or 1/8
    scale): a 40 MP photo costs ~2.5 MP of memory and time; for a grey model, grey at any size (the
    JPEG's own luma: ~0.03 grey levels from converting its RGB on average, more only where RGB
    clips). No-op for other formats. A model trained on a user's folders gets the reduced decode
    its training images got."""
    channels, size = meta["image_shape"][0], meta["image_shape"][1]
    if framing(meta) == "crop":
        draft_for_square(image, size, channels)
        return
    if image.format != "JPEG":
        return
    w, h = image.size
    k = WORKING_SIDE / max(w, h)
    mode = "L" if channels == 1 else "RGB"
    if k < 0.5:
        image.draft(mode, (max(1, int(w * k) + 1), max(1, int(h * k) + 1)))
    elif mode == "L":  # a grey model: libjpeg decodes the luma alone (no chroma upsampling, no colour conversion)
        image.draft(mode, None)


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit grey -> 8 bits at the working size (PIL's convert('L') would clip: most pixels would
    become 255): box averages of the working_size factor, then round(x / 257). In integers, BAND rows
    at a time, so a 40 MP image is never copied whole (float copies of it took ~1 GB and seconds)."""
    if image.mode in SIXTEEN_BIT:
        w, h = image.size
        factor = working_factor(image.size)
        out = np.empty(((h + factor - 1) // factor, (w + factor - 1) // factor), np.uint8)
        _, col_counts = block_sums(np.zeros((1, w), np.int64), factor, axis=1)
        rows = factor * max(1, BAND // factor)
        for y in range(0, h, rows):
            band = np.asarray(image.crop((0, y, w, min(h, y + rows)))).astype(np.int64)  # (16-bit: fast)
            if image.mode == "I":  # 32-bit: may hold values outside 16 bits
                np.clip(band, 0, 65535, out=band)
            sums, row_counts = block_sums(band, factor, axis=0)
            sums, _ = block_sums(sums, factor, axis=1)
            counts = np.outer(row_counts, col_counts)  # edge blocks hold fewer pixels
            mean = (sums + counts // 2) // counts
            out[y // factor : y // factor + len(sums)] = (mean + 128) // 257  # = round(x / 257): never a half
        return Image.fromarray(out)
    if image.mode == "F":
        return Image.fromarray(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8))
    return image


def block_sums(a: np.ndarray, factor: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of consecutive runs of `factor` along `axis` (the last run may be shorter) -> (sums, run lengths)."""
    n = a.shape[axis]
    full = n // factor * factor
    head = np.take(a, np.arange(full), axis=axis) if full < n else a
    shape = list(a.shape)
    shape[axis : axis + 1] = [full // factor, factor]
    sums = head.reshape(shape).sum(axis=axis + 1)
    lengths = [factor] * (full // factor)
    if full < n:
        rest = np.take(a, np.arange(full, n), axis=axis).sum(axis=axis, keepdims=True)
        sums = np.concatenate([sums, rest], axis=axis)
        lengths.append(n - full)
    return sums, np.array(lengths, np.int64)


def working_factor(size: tuple[int, int]) -> int:
    """The whole factor that shrinks an image to at least WORKING_SIDE on its longest side (1: none)."""
    factor = max(size) // WORKING_SIDE
    return factor if factor >= 2 else 1


def working_size(image: Image.Image) -> Image.Image:
    """Shrunk by a whole factor (box-averaged) to at least WORKING_SIDE on its longest side: what
    a big JPEG's draft does, for every other image (a 40 MP PNG: 3 MB instead of 120 MB onwards)."""
    factor = working_factor(image.size)
    return image.reduce(factor) if factor > 1 else image


def upright(image: Image.Image, channels: int) -> np.ndarray:
    """8 bits, working size, EXIF rotation applied, the model's grey or RGB -> (H, W) or (H, W, 3) uint8.
    Palette and other modes become plain pixels first (indices must not be averaged); the size is
    reduced before anything else copies the image."""
    mode = "L" if channels == 1 else "RGB"
    image = eight_bit(image)
    if image.mode not in ("L", "RGB"):  # palette, alpha, CMYK...: to plain pixels before averaging
        image = image.convert(mode)
    image = working_size(image)
    if image.mode != mode:
        image = image.convert(mode)
    ImageOps.exif_transpose(image, in_place=True)
    return np.array(image, dtype=np.uint8)


def resize_whole(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """The whole image at the input size, area-averaged (PIL's BOX filter) -> uint8 (C, H, W)."""
    image = Image.fromarray(pixels)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BOX)
    arr = np.asarray(image, dtype=np.uint8)
    return np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))


def is_input_sized(pixels: np.ndarray, height: int, width: int) -> bool:
    """The rule for a face model: an image of exactly the model's input size (FER2013: 48x48) is a
    face crop already, framed as the dataset's own images were, and is classified as it is, the
    way `fixmatch evaluate` classifies the test split. Detecting a face again inside it would crop
    a part of the face (or miss it) and change the answer."""
    return pixels.shape[:2] == (height, width)


def prepare(image: Image.Image, meta: dict) -> dict:
    """A decoded image -> {"pixels": uint8 (C, H, W), "framing", "face_found", "box", "image_size"}.

    face framing: box is the face [x, y, w, h] in the upright image's pixels, or None (then the
    centre square was classified and face_found is False); an image of exactly the input size is
    the face itself (box: the whole image). resize: box and face_found are None."""
    c, h, w = meta["image_shape"]
    pixels = upright(image, c)
    size = [pixels.shape[1], pixels.shape[0]]
    if framing(meta) == "resize":
        return {
            "pixels": resize_whole(pixels, h, w),
            "framing": "resize",
            "face_found": None,
            "box": None,
            "image_size": size,
        }
    if framing(meta) == "crop":  # a user's folders: shorter side to the input size, centre square
        crop = np.asarray(square(Image.fromarray(pixels), h), dtype=np.uint8)
        crop = crop[None] if crop.ndim == 2 else crop.transpose(2, 0, 1)
        return {
            "pixels": np.ascontiguousarray(crop),
            "framing": "crop",
            "face_found": None,
            "box": None,
            "image_size": size,
        }
    if is_input_sized(pixels, h, w):  # already a face crop at the model's size: as evaluate feeds it
        crop = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return {
            "pixels": np.ascontiguousarray(crop),
            "framing": "face",
            "face_found": True,
            "box": [0, 0, w, h],
            "image_size": size,
        }
    from fixmatch.inference.face import frame_face  # deferred: OpenCV, only for a model that frames faces

    crop, box = frame_face(pixels, (h, w))
    return {"pixels": crop, "framing": "face", "face_found": box is not None, "box": box, "image_size": size}


def open_file(path, meta: dict) -> Image.Image:
    """A file from disk for predict, decoded within the server's decoding policy and with its draft
    (decoding.py: a file it refuses is an ImageRefused, a ValueError saying why)."""
    return open_image(path, FOLDER_FORMATS, draft=lambda image: draft(image, meta))
