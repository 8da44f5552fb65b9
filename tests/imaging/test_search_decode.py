"""A face model's JPEG is decoded only as large as the face search needs; a face too small in that
copy is cut from the working-size decode instead; the box and image_size are the photo's own pixels.

The detector is replaced by one that answers a fixed fraction of whatever copy it is given, so
these tests follow the decoding and the box arithmetic alone (tests/serve covers the real detector).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fixmatch.imaging.decoding import FOLDER_FORMATS, open_image
from fixmatch.inference import face, preprocess

FACE_MODEL = {"image_shape": [1, 48, 48], "preprocess": "face", "class_names": ["a", "b"]}
RESIZE_MODEL = {"image_shape": [1, 32, 32], "preprocess": "resize", "class_names": ["a", "b"]}


def photo_jpeg(width: int, height: int, exif_orientation: int | None = None) -> bytes:
    yy, xx = np.mgrid[:height, :width]
    grey = (128 + 60 * np.sin(xx / 17.0) * np.cos(yy / 23.0)).astype(np.uint8)  # detail at every scale
    buf = io.BytesIO()
    exif = Image.Exif()
    if exif_orientation:
        exif[0x0112] = exif_orientation
    Image.fromarray(grey).save(buf, "JPEG", quality=95, exif=exif)
    return buf.getvalue()


@pytest.fixture
def decodes(monkeypatch):
    """read_photo on bytes, recording the size of every decode, with a detector that finds a face
    of `fraction` of the copy's width at its centre (a square of that many pixels)."""
    sizes: list[tuple[int, int]] = []
    monkeypatch.setattr(face, "search_side", lambda: 240)  # YuNet's largest copy

    def run(data: bytes, fraction: float, meta=FACE_MODEL) -> dict:
        def find(grey, detector=None):
            h, w = grey.shape
            side = max(1, round(fraction * w))
            return [w // 2 - side // 2, h // 2 - side // 2, side, side]

        monkeypatch.setattr(face, "find_face", find)

        def open_with(draft_first):
            image = open_image(data, FOLDER_FORMATS, draft=draft_first)
            sizes.append(image.size)
            return image

        return preprocess.read_photo(open_with, meta)

    run.sizes = sizes  # type: ignore[attr-defined]
    return run


def working_pixels(data: bytes) -> np.ndarray:
    """The photo as the working-size decode gives it (upright, grey)."""
    image = open_image(data, FOLDER_FORMATS, draft=lambda im: preprocess.draft(im, FACE_MODEL))
    return preprocess.upright(image, 1)


def test_a_large_face_is_searched_and_cut_in_a_quarter_size_decode(decodes):
    data = photo_jpeg(1280, 960)
    answer = decodes(data, fraction=0.25)
    assert decodes.sizes == [(320, 240)]  # 1/4 scale: at least 240 px, the detector's largest copy
    small = preprocess.upright(open_image(data, draft=lambda im: im.draft("L", (241, 181))), 1)
    assert small.shape == (240, 320)
    box = [120, 80, 80, 80]  # the fake detector's answer on the 320x240 copy
    assert np.array_equal(answer["pixels"], face.crop_to_input(small, box, (48, 48)))
    assert answer["image_size"] == [1280, 960] and answer["box"] == [480, 320, 320, 320]  # x4: the photo's pixels


def test_a_face_smaller_than_the_input_is_cut_from_the_working_size(decodes):
    data = photo_jpeg(1280, 960)
    answer = decodes(data, fraction=0.1)  # 32 px in the 320 px copy: fewer than the model's 48
    assert decodes.sizes == [(320, 240), (1280, 960)]
    box = [144, 104, 32, 32]  # on the 320x240 copy
    assert answer["box"] == [4 * v for v in box] and answer["image_size"] == [1280, 960]
    assert np.array_equal(answer["pixels"], face.crop_to_input(working_pixels(data), answer["box"], (48, 48)))


def test_a_photo_the_search_does_not_reduce_is_decoded_once(decodes):
    answer = decodes(photo_jpeg(400, 300), fraction=0.1)  # a small face, but no finer decode exists
    assert decodes.sizes == [(400, 300)] and answer["image_size"] == [400, 300]
    assert answer["box"] == [180, 130, 40, 40]


def test_an_exif_turned_photo_reports_its_upright_size(decodes):
    answer = decodes(photo_jpeg(1280, 960, exif_orientation=6), fraction=0.25)  # 6: turned a quarter
    assert decodes.sizes == [(320, 240)]
    assert answer["image_size"] == [960, 1280]
    x, y, w, h = answer["box"]
    assert x + w <= 960 and y + h <= 1280 and w == h == 240  # 60 px of the 240 px wide upright copy, x4


def test_other_framings_decode_at_the_working_size_and_report_the_photos_size(decodes):
    data = photo_jpeg(2800, 2100)
    answer = decodes(data, fraction=0.25, meta=RESIZE_MODEL)
    assert decodes.sizes == [(1400, 1050)]  # 1/2 scale: at least WORKING_SIDE
    assert answer["image_size"] == [2800, 2100] and answer["box"] is None


def test_a_box_maps_between_copies_edge_to_edge():
    assert preprocess.rescale([0, 0, 320, 240], (240, 320), (960, 1280)) == [0, 0, 1280, 960]
    assert preprocess.rescale([10, 20, 30, 40], (240, 320), (240, 320)) == [10, 20, 30, 40]
    # the last pixel of a 1/4 copy whose sides were rounded up: to the edge, never past it
    # (x: 319 * 1279 / 320 = 1275.0 to 1279; y: 239 * 961 / 240 = 957.0 to 961)
    assert preprocess.rescale([319, 239, 1, 1], (240, 320, 3), (961, 1279)) == [1275, 957, 4, 4]
