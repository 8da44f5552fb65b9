"""One way from a photo to the model's input, for the web page and `fixmatch predict` alike.

A model says how its inputs were framed (meta["preprocess"]): "face" (FER2013: the largest
frontal face, cropped like the dataset's, see face.py) or "resize" (the whole image resized to the
input size, what every other dataset's images are). Files written before the key existed are
"face" exactly when they were trained on fer2013. Torch-free: the server's ONNX path never needs it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from fixmatch.framing import draft_for_square, square

WORKING_SIDE = 1280  # big JPEGs are decoded straight to about this size (libjpeg's DCT scaling)
FRAMINGS = ("face", "resize", "crop")
SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}  # 16-bit grey PNGs open as one of these


def framing(meta: dict) -> str:
    kind = meta.get("preprocess") or ("face" if meta.get("dataset") == "fer2013" else "resize")
    return kind if kind in FRAMINGS else "resize"


def draft(image: Image.Image, meta: dict) -> None:
    """Ask a JPEG decoder for a copy at least WORKING_SIDE on its longest side (1/2, 1/4 or 1/8
    scale): a 40 MP photo costs ~2.5 MP of memory and time. No-op for other formats. A model
    trained on a user's folders gets the reduced decode its training images got."""
    channels, size = meta["image_shape"][0], meta["image_shape"][1]
    if framing(meta) == "crop":
        draft_for_square(image, size, channels)
        return
    if image.format != "JPEG":
        return
    w, h = image.size
    k = WORKING_SIDE / max(w, h)
    if k < 0.5:
        image.draft("L" if channels == 1 else "RGB", (max(1, int(w * k) + 1), max(1, int(h * k) + 1)))


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit grey scaled to 0..255 (PIL's convert('L') would clip: most pixels would become 255)."""
    if image.mode in SIXTEEN_BIT:
        wide = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8))
    if image.mode == "F":
        return Image.fromarray(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8))
    return image


def working_size(image: Image.Image) -> Image.Image:
    """Shrunk by a whole factor (box-averaged) to at least WORKING_SIDE on its longest side: what
    a big JPEG's draft does, for every other image (a 40 MP PNG: 3 MB instead of 120 MB onwards)."""
    factor = max(image.size) // WORKING_SIDE
    return image.reduce(factor) if factor >= 2 else image


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
    from fixmatch.serve.face import frame_face

    crop, box = frame_face(pixels, (h, w))
    return {"pixels": crop, "framing": "face", "face_found": box is not None, "box": box, "image_size": size}


def open_file(path, meta: dict) -> Image.Image:
    """A file from disk, decoded the way the server decodes uploads (same draft), for predict."""
    image = Image.open(path)
    draft(image, meta)
    image.load()
    return image
