"""One way from a photo to the model's input, for the web page and `fixmatch predict` alike.

A model says how its inputs were framed (meta["preprocess"]): "face" (FER2013: the largest
frontal face, cropped like the dataset's, see face.py) or "resize" (the whole image resized to the
input size, what every other dataset's images are). Files written before the key existed are
"face" exactly when they were trained on fer2013. Torch-free: the server's ONNX path never needs it.
"""

from __future__ import annotations

import numpy as np
from PIL import ExifTags, Image, ImageOps

from fixmatch.imaging.decoding import FOLDER_FORMATS, open_image
from fixmatch.imaging.framing import draft_for_square, square

WORKING_SIDE = 1280  # big JPEGs are decoded straight to about this size (libjpeg's DCT scaling)
FRAMINGS = ("face", "resize", "crop")
SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}  # 16-bit grey PNGs open as one of these
BAND = 64  # rows converted at a time from 16 to 8 bits
TRANSPOSING = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def framing(meta: dict) -> str:
    kind = meta.get("preprocess") or ("face" if meta.get("dataset") == "fer2013" else "resize")
    return kind if kind in FRAMINGS else "resize"


def draft(image: Image.Image, meta: dict, side: int = WORKING_SIDE) -> None:
    """Ask a JPEG decoder for a copy at least `side` (WORKING_SIDE) on its longest side (1/2, 1/4 or
    1/8 scale): a 40 MP photo costs ~2.5 MP of memory and time; for a grey model, grey at any size
    (the JPEG's own luma: ~0.03 grey levels from converting its RGB on average, more only where RGB
    clips). No-op for other formats. A model trained on a user's folders gets the reduced decode
    its training images got."""
    channels, size = meta["image_shape"][0], meta["image_shape"][1]
    if framing(meta) == "crop":
        draft_for_square(image, size, channels)
        return
    if image.format != "JPEG":
        return
    w, h = image.size
    k = side / max(w, h)
    mode = "L" if channels == 1 else "RGB"
    if k < 0.5:
        image.draft(mode, (max(1, int(w * k) + 1), max(1, int(h * k) + 1)))
    elif mode == "L":  # a grey model: libjpeg decodes the luma alone (no chroma upsampling, no colour conversion)
        image.draft(mode, None)


def read_photo(open_with, meta: dict) -> dict:
    """An encoded photo -> prepare's answer. `open_with(draft)` decodes it within the caller's
    decoding policy, `draft(image)` asking the decoder for a size first.

    A face model's JPEG is decoded only as large as the face search needs (face.search_side: a
    1280 px upload at 1/4 scale, ~2 ms less to decode, copy and shrink); where the face found there
    is smaller than the model's input, the photo is decoded again at the working size and the face
    cut from that copy, so a face is never enlarged from a reduced copy when the photo holds more."""
    sent: list[tuple[int, int]] = []

    def search_draft(image: Image.Image) -> None:
        sent.append(image.size)  # the photo's own size, before any reduction
        draft(image, meta, search_side(meta))

    image = open_with(search_draft)
    return prepare(image, meta, sent[0] if sent else None, lambda: open_with(lambda im: draft(im, meta)))


def search_side(meta: dict) -> int:
    if framing(meta) != "face":
        return WORKING_SIDE
    from fixmatch.inference.face import search_side as detectors_side  # deferred: OpenCV

    return detectors_side()


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


def prepare(image: Image.Image, meta: dict, sent_size: tuple[int, int] | None = None, finer=None) -> dict:
    """A decoded image -> {"pixels": uint8 (C, H, W), "framing", "face_found", "box", "image_size"}.

    image_size is the photo's own size, upright (sent_size: its size before the decoder reduced it,
    when it did); the box is in those pixels. face framing: box is the face [x, y, w, h], or None
    (then the centre square was classified and face_found is False); an image of exactly the input
    size is the face itself (box: the whole image). `finer()`, where given, decodes the photo again
    at the working size, for a face too small in `image` (read_photo). resize: box and face_found
    are None."""
    c, h, w = meta["image_shape"]
    size = upright_size(image, sent_size or image.size)
    pixels = upright(image, c)
    answer = {"framing": framing(meta), "face_found": None, "box": None, "image_size": list(size)}
    if framing(meta) == "resize":
        return {"pixels": resize_whole(pixels, h, w), **answer}
    if framing(meta) == "crop":  # a user's folders: shorter side to the input size, centre square
        crop = np.asarray(square(Image.fromarray(pixels), h), dtype=np.uint8)
        crop = crop[None] if crop.ndim == 2 else crop.transpose(2, 0, 1)
        return {"pixels": np.ascontiguousarray(crop), **answer}
    if is_input_sized(pixels, h, w):  # already a face crop at the model's size: as evaluate feeds it
        crop = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return {"pixels": np.ascontiguousarray(crop), **answer, "face_found": True, "box": [0, 0, w, h]}
    from fixmatch.inference.face import crop_to_input, frame_face  # deferred: OpenCV, for face models only

    crop, box = frame_face(pixels, (h, w))
    if (
        box is not None
        and (box[2] < w or box[3] < h)
        and finer is not None
        and max(pixels.shape[:2]) < min(WORKING_SIDE, max(size))
    ):  # a small face in a reduced copy: cut from the working size instead
        detailed = upright(finer(), c)
        box = rescale(box, pixels.shape, detailed.shape)
        pixels, crop = detailed, crop_to_input(detailed, box, (h, w))
    found = None if box is None else rescale(box, pixels.shape, size[::-1])
    return {"pixels": crop, **answer, "face_found": box is not None, "box": found}


def upright_size(image: Image.Image, size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) `size` as it stands once the image's EXIF orientation is applied."""
    turned = image.getexif().get(ExifTags.Base.Orientation) in TRANSPOSING
    return (size[1], size[0]) if turned else (size[0], size[1])


def rescale(box: list[int], shape: tuple[int, ...], to: tuple[int, ...]) -> list[int]:
    """[x, y, w, h] in an image of `shape` (height, width, ...) -> the same region in one of `to`."""
    ky, kx = to[0] / shape[0], to[1] / shape[1]
    if (ky, kx) == (1, 1):
        return box
    x0, y0 = round(box[0] * kx), round(box[1] * ky)
    x1, y1 = min(to[1], round((box[0] + box[2]) * kx)), min(to[0], round((box[1] + box[3]) * ky))
    return [x0, y0, x1 - x0, y1 - y0]


def read_file(source, meta: dict) -> dict:
    """A file's path (or its bytes) -> prepare's answer, decoded within the server's decoding policy
    and with its drafts (read_photo; decoding.py: a file it refuses is an ImageRefused, a ValueError
    saying why)."""
    return read_photo(lambda draft_first: open_image(source, FOLDER_FORMATS, draft=draft_first), meta)
