"""How a decoded image becomes a square model input, as training on a user's folders saw it: the
model's grey or RGB (transparency over white, 16-bit greys scaled), the shorter side resized to the
input size, the centre cropped. Torch-free: the server's ONNX path frames with it too."""

from __future__ import annotations

import math

import numpy as np

MAX_INPUT_SIDE = 512  # a model input's largest side: predict's batch of 64 at 512x512x3 is 200 MB already


def to_mode(im, channels: int):
    """PIL image -> 'L' or 'RGB'. Transparency is laid over white (as a viewer shows it);
    16-bit greys keep their top 8 bits (PIL's own convert would clip them at 255)."""
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    elif im.mode.startswith("I;16"):
        im = Image.fromarray((np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8))
    return im.convert("L" if channels == 1 else "RGB")


def square(im, size: int):
    """Shorter side -> size, centre crop (one resample of the central square; a plain crop when
    the shorter side already is `size`). Bilinear, antialiased when shrinking (PIL's resize)."""
    from PIL import Image

    w, h = im.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    if side == size:
        return im.crop(box)
    return im.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)


def draft_for_square(image, size: int, channels: int) -> None:
    """Ask a JPEG decoder for the smallest scale (1/2, 1/4, 1/8) whose shorter side is still at least
    `size`: decoding is much faster, and training and inference then start from the same pixels."""
    if image.format != "JPEG":
        return
    w, h = image.size
    ratio = min(w, h) / size
    image.draft("L" if channels == 1 else "RGB", (math.ceil(w / ratio), math.ceil(h / ratio)))
