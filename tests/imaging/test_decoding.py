"""One decoding policy (fixmatch/decoding.py) for the server's uploads, `fixmatch predict` and the
training folders: the same crafted files are refused by all three, for the same reason."""

from __future__ import annotations

import io
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from repo import TESTS
from serve_fixtures import encode, png_bomb

from fixmatch.data.image_cache import decode as training_decode
from fixmatch.imaging import decoding
from fixmatch.imaging.decoding import ImageRefused, jpeg_scan_count, open_image
from fixmatch.inference.predict import prepare_file

RESIZE_MODEL = {"image_shape": [1, 48, 48], "preprocess": "resize", "class_names": ["a", "b"]}


def progressive(side: int, scans: int) -> bytes:
    """A progressive JPEG of side x side pixels whose last scan is repeated until it has `scans`
    (each scan walks the whole image: a decode costs scans x pixels)."""
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (side, side), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    last, end = starts[-1], data.rindex(b"\xff\xd9")
    return data[:end] + data[last:end] * (scans - len(starts)) + data[end:]


def stray_byte_before_first_scan(data: bytes) -> bytes:
    first = data.index(b"\xff\xda")
    return data[:first] + b"\x00" + data[first:]


def test_a_stray_byte_does_not_hide_the_scans():
    """libjpeg skips bytes where a marker should be (it warns and reads on), so a 0x00 before the
    first scan changes nothing for the decoder; the count must not stop there either."""
    plain = progressive(64, scans=6)
    stray = stray_byte_before_first_scan(plain)
    a, b = Image.open(io.BytesIO(plain)), Image.open(io.BytesIO(stray))
    assert np.array_equal(np.asarray(a), np.asarray(b))  # the decoder reads every scan of both
    assert jpeg_scan_count(plain) == jpeg_scan_count(stray) == 6
    assert jpeg_scan_count(stray_byte_before_first_scan(progressive(64, scans=200))) > decoding.MAX_SCANS


def test_scan_count_skips_segments_and_restarts():
    """A JPEG marker's bytes inside a segment (here a comment holding a whole progressive JPEG, as
    an EXIF thumbnail can) are not scans; restart markers inside a scan belong to it."""
    photo = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    thumb = encode(photo[:32, :32], "JPEG", progressive=True)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", comment=thumb, restart_marker_blocks=1)
    data = buf.getvalue()
    assert data.count(b"\xff\xda") > 1 and b"\xff\xd0" in data  # the thumbnail's scans, restarts
    assert jpeg_scan_count(data) == 1


def flat_webp(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, 200)).save(buf, "WEBP", lossless=True)
    return buf.getvalue()


@pytest.fixture
def refused_files(tmp_path):
    """Files every reader must refuse -> {path: what the refusal says}."""
    files = {
        "scans.jpg": (stray_byte_before_first_scan(progressive(128, scans=100)), "scans"),
        "pixels.png": (png_bomb(100_000, 100_000), "megapixels"),
        "pixels.webp": (flat_webp(3700, 3000), "limit for WebP"),  # 11 MP in a few hundred bytes
        "text.jpg": (b"just some text", "not an image"),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    return {tmp_path / name: words for name, (_, words) in files.items()}


def test_one_policy_for_the_server_predict_and_training(refused_files):
    """The same files, the same refusal: the policy itself, the training decode, predict's
    preprocessing (the server's answers to them: tests/serve/test_serve.py)."""
    for path, words in refused_files.items():
        with pytest.raises(ImageRefused, match=words):
            open_image(path.read_bytes(), decoding.UPLOAD_FORMATS)
        with pytest.raises(ImageRefused, match=words):
            training_decode(path, 32, 1)
        row = prepare_file(path, RESIZE_MODEL)
        assert words in row.get("error", ""), (path.name, row)


def test_the_decode_clock_holds_for_training_and_predict_too(tmp_path, monkeypatch):
    """A decode that passes the checks but runs long is abandoned at the clock, whoever decodes
    (the scan bounds are loosened here so that the file reaches the decoder)."""
    monkeypatch.setattr(decoding, "MAX_SCANS", 10**6)
    monkeypatch.setattr(decoding, "MAX_SCAN_MEGAPIXELS", 10**9)
    monkeypatch.setattr(decoding, "DECODE_SECONDS", 0.2)
    monkeypatch.setattr(decoding, "MAX_FILE_BYTES", 2**40)
    path = tmp_path / "slow.jpg"
    path.write_bytes(progressive(2048, scans=3000))
    with pytest.raises(ImageRefused, match="of CPU to decode") as refused:
        training_decode(path, 32, 1)
    assert refused.value.kind == "cost"
    assert "of CPU to decode" in prepare_file(path, RESIZE_MODEL)["error"]


def test_ordinary_files_of_every_folder_format_decode(tmp_path):
    photo = np.random.default_rng(2).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    for fmt, suffix in [
        ("JPEG", "jpg"),
        ("PNG", "png"),
        ("WEBP", "webp"),
        ("BMP", "bmp"),
        ("GIF", "gif"),
        ("TIFF", "tif"),
        ("PPM", "ppm"),
    ]:
        path = tmp_path / f"photo.{suffix}"
        path.write_bytes(encode(photo, fmt))
        assert open_image(path).size == (60, 40), fmt
        assert training_decode(path, 32, 3).shape == (3, 32, 32)
    with pytest.raises(ImageRefused, match="not an image") as refused:
        open_image(encode(photo, "GIF"), decoding.UPLOAD_FORMATS)  # the server takes the web's four
    assert refused.value.kind == "format"


def test_a_16_bit_png_is_made_8_bit_without_float_copies():
    """A 12 MP 16-bit grey image through predict's and the server's preparation: numpy's peak stays
    below one 16-bit copy of it, 2 bytes per pixel (the 8-bit result, 1, and a band of rows at a
    time); the float64 conversion it replaced held 8 bytes per pixel several times over."""
    from fixmatch.inference.preprocess import eight_bit, prepare

    h, w = 3000, 4000
    wide = (np.arange(h * w, dtype=np.uint32) * 7 % 65536).astype(np.uint16).reshape(h, w)
    image = Image.fromarray(wide)
    assert image.mode.startswith("I;16")
    tracemalloc.start()
    try:
        prepared = prepare(image, RESIZE_MODEL)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * h * w, f"{peak / (h * w):.1f} bytes per pixel"
    assert prepared["pixels"].shape == (1, 48, 48)
    corner = np.asarray(eight_bit(Image.fromarray(wide[:64, :64])))
    assert np.array_equal(corner, np.rint(wide[:64, :64] / 257.0).astype(np.uint8))  # round(x / 257) exactly


def test_a_large_16_bit_image_is_averaged_to_the_working_size_then_made_8_bit():
    """Past WORKING_SIDE the 16-bit values are box-averaged by the working-size factor first (edge
    blocks over the pixels they hold), then rounded to 8 bits: the reference restated in floats."""
    from fixmatch.inference.preprocess import WORKING_SIDE, eight_bit

    h, w = 301, 2 * WORKING_SIDE + 5  # factor 2; a last row and column of partial blocks
    wide = np.random.default_rng(3).integers(0, 65536, (h, w)).astype(np.uint16)
    got = np.asarray(eight_bit(Image.fromarray(wide)))
    assert got.shape == ((h + 1) // 2, (w + 1) // 2)
    padded = np.full((h + 1, w + 1), np.nan)
    padded[:h, :w] = wide
    blocks = padded.reshape((h + 1) // 2, 2, (w + 1) // 2, 2)
    mean = np.floor(np.nanmean(blocks, axis=(1, 3)) + 0.5)  # rounded half up, as the integers do
    assert np.array_equal(got, np.floor((mean + 128) / 257).astype(np.uint8))


def tiff(pixels: np.ndarray, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "TIFF", **options)
    return buf.getvalue()


def every_reader_refuses(path, words: str, kind: str) -> None:
    """The policy on the path, the training decode and predict's preprocessing: the same refusal."""
    with pytest.raises(ImageRefused, match=words) as refused:
        open_image(path)
    assert refused.value.kind == kind
    with pytest.raises(ImageRefused, match=words):
        training_decode(path, 32, 1)
    assert words in prepare_file(path, RESIZE_MODEL).get("error", "")


def test_tiffs_whose_decoder_the_clock_cannot_stop_are_refused_before_decoding(tmp_path, monkeypatch):
    """libtiff reads the file descriptor itself: the clock is checked only once it is done, so the
    bounds are checked from the header. JPEG inside a TIFF (each tile a whole JPEG) is refused,
    and so is a TIFF cut into more tiles or strips than MAX_TIFF_SEGMENTS."""
    photo = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    (tmp_path / "jpeg.tif").write_bytes(tiff(photo, compression="jpeg"))
    every_reader_refuses(tmp_path / "jpeg.tif", "TIFF holding JPEG-compressed data", "cost")

    def decoded_by_libtiff(image):
        raise AssertionError("the decoder ran")

    thin = np.zeros((decoding.MAX_TIFF_SEGMENTS + 1, 1), np.uint8)  # one strip per row
    (tmp_path / "strips.tif").write_bytes(tiff(thin, compression="tiff_deflate", tiffinfo={278: 1}))
    monkeypatch.setattr(Image.Image, "load", decoded_by_libtiff)
    every_reader_refuses(tmp_path / "strips.tif", f"{decoding.MAX_TIFF_SEGMENTS + 1:,} tiles or strips", "cost")
    monkeypatch.undo()
    (tmp_path / "plain.tif").write_bytes(tiff(photo, compression="tiff_deflate"))  # an ordinary TIFF still reads
    assert open_image(tmp_path / "plain.tif").size == (64, 64)


def test_a_file_too_large_to_be_an_image_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """A sparse file (no disk, no time to make) with a JPEG header: refused from its size, never read."""
    big = tmp_path / "huge.jpg"
    with open(big, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0")
        f.truncate(decoding.MAX_FILE_BYTES + 1)
    opened = []
    real_open = open

    def watching_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", watching_open)
    every_reader_refuses(big, f"the limit is {decoding.MAX_FILE_BYTES // 2**20} MB", "pixels")
    assert str(big) not in opened
    monkeypatch.undo()
    with pytest.raises(ImageRefused, match="the limit is"):  # bytes handed in directly: the same bound
        decoding.check_file_size(decoding.MAX_FILE_BYTES + 1)


def test_a_fifo_among_the_images_is_refused_not_waited_on(tmp_path):
    import os

    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    code = (  # in a child: without the check, open() waits for a writer that never comes
        "import sys; sys.path[:0] = [p for p in sys.argv[2:]]\n"
        "from test_decoding import every_reader_refuses\n"
        "from pathlib import Path\n"
        "every_reader_refuses(Path(sys.argv[1]), 'not a regular file', 'format')\n"
    )
    paths = [str(Path(__file__).parent), str(TESTS)]  # this file, and the helpers it imports
    proc = subprocess.run([sys.executable, "-c", code, str(fifo), *paths], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
