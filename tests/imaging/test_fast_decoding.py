"""The cheap decode path: the JPEG scan counter reads markers as libjpeg does without a regex,
and a grey model's JPEGs are decoded straight to grey by libjpeg."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from fixmatch.imaging.decoding import jpeg_scan_count, open_image
from fixmatch.inference.preprocess import draft

SOI, EOI = b"\xff\xd8", b"\xff\xd9"
SOS = b"\xff\xda\x00\x02"  # a start of scan whose header is only its length
GREY_MODEL = {"image_shape": [1, 48, 48], "preprocess": "face", "class_names": ["a", "b"]}
RGB_MODEL = {"image_shape": [3, 48, 48], "preprocess": "face", "class_names": ["a", "b"]}


def test_fill_bytes_stuffing_and_segments_in_the_scan_count():
    """Fill FFs before a marker are skipped; FF 00 inside a scan is a data byte, not a marker; a
    segment's bytes are skipped by its length, whatever they hold; the count ends at EOI."""
    assert jpeg_scan_count(SOI + b"\xff\xff\xff" + SOS + b"\x12" + EOI) == 1
    assert jpeg_scan_count(SOI + SOS + b"\x12\xff\x00\xda\x00\x02\xff\xff\x00\xda" + EOI) == 1
    comment = b"\xff\xfe\x00\x06" + b"\xff\xda\x00\x02"  # a comment whose bytes look like a scan
    assert jpeg_scan_count(SOI + comment + SOS + SOS + EOI + SOS) == 2
    assert jpeg_scan_count(SOI + SOS + b"\x01\xff\xd3\x02" + SOS) == 2  # a restart marker belongs to its scan
    assert jpeg_scan_count(SOI + SOS + b"\xff\xff") == 1  # fill bytes up to the end: no marker
    assert jpeg_scan_count(SOI + SOS * 100, stop_after=5) == 6


def test_a_grey_model_decodes_jpegs_to_grey_in_the_decoder():
    rng = np.random.default_rng(0)
    photo = np.clip(rng.normal(128, 30, (64, 96, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    grey = open_image(data, draft=lambda image: draft(image, GREY_MODEL))
    assert grey.mode == "L" and grey.size == (96, 64)  # libjpeg's grey output, at full size
    converted = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=float)
    assert np.abs(np.asarray(grey, dtype=float) - converted).mean() < 0.5  # the luma: the same grey
    assert open_image(data, draft=lambda image: draft(image, RGB_MODEL)).mode == "RGB"
