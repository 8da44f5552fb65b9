"""The web demo's API (Flask test client): predictions on real faces, and a JSON error for every bad input."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from PIL import Image, ImageFile
from serve_fixtures import (
    encode,
    face_jpeg,
    multipart,
    png_bomb,
    progressive_jpeg_bomb,
    scene_with_face,
    skimage_photo,
    start_server,
    stop_server,
)

pytest.importorskip("flask", reason="the serve extra is not installed")
from repo import REPO

from fixmatch.errors import UserError  # noqa: E402
from fixmatch.serve import create_app  # noqa: E402

CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]


@pytest.fixture(scope="module")
def client(fer_model):
    return create_app(str(fer_model["onnx"]), rate_limit="off").test_client()


def post(client, data: bytes | None = None, name="photo.jpg", field="file", mimetype="image/jpeg", extra=None):
    form = {} if data is None else {field: (io.BytesIO(data), name, mimetype)}
    return client.post("/api/predict", data={**form, **(extra or {})}, content_type="multipart/form-data")


def check_prediction(body: dict) -> None:
    assert set(body) >= {"label", "probabilities", "box", "face_found", "ms"}
    assert list(body["probabilities"]) == CLASSES
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-3
    assert body["label"] == max(body["probabilities"], key=body["probabilities"].get)
    assert body["face_found"] == (body["box"] is not None)
    ms = body["ms"]
    assert ms["decode"] > 0 and ms["preprocess"] >= 0 and ms["model"] > 0
    # the parts add up to the total: each is rounded to 0.01 ms, so they may differ by 4 x 0.005
    assert abs(ms["decode"] + ms["preprocess"] + ms["model"] - ms["total"]) <= 0.0201


# ---------------------------------------------------------------- pages and model info


def test_page_health_and_model_info(client):
    page = client.get("/")
    assert page.status_code == 200 and b"Choose a photo" in page.data and b"app.js" in page.data
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/healthz").json["status"] == "ok"
    info = client.get("/api/model").json
    assert info["classes"] == CLASSES and info["input"] == {"channels": 1, "height": 48, "width": 48}
    assert info["card"]["test_accuracy"] == 0.5


class StubPredictor:
    """A model's metadata without a model: what the page says depends on nothing else."""

    def __init__(self, **meta):
        self.meta = {"class_names": ["cat", "dog"], "image_shape": [3, 32, 32], "model_name": "cnn_small", **meta}
        self.path = "model.onnx"

    def probabilities(self, x):
        return np.full((len(x), 2), 0.5, np.float32)


@pytest.mark.parametrize(
    "meta, says, never",
    [
        (
            {"dataset": "folders", "preprocess": "crop"},
            ["centre square", "own labelled photos"],
            ["is resized to", "on folders"],
        ),
        (
            {"dataset": "cifar10", "preprocess": "resize"},
            ["whole image is resized to 32×32 px", "CIFAR-10"],
            ["centre square"],
        ),
    ],
)
def test_the_page_says_what_happens_to_a_photo(meta, says, never):
    page = create_app(predictor=StubPredictor(**meta), rate_limit="off").test_client().get("/").text
    lead = page[page.index('<p class="lead">') :].split("</p>")[0]
    assert all(s in lead for s in says) and not any(n in lead for n in never), lead


def test_the_docs_name_every_framing_the_api_answers():
    """The serving guide's API row for /api/predict lists each value "framing" can take (preprocess.FRAMINGS)."""

    from fixmatch.inference.preprocess import FRAMINGS

    readme = (REPO / "docs" / "serving.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `POST /api/predict`"))
    assert all(f'"{f}"' in row for f in FRAMINGS), row


def test_a_favicon_is_served(client):
    page = client.get("/").text
    assert 'rel="icon"' in page and "/static/favicon.svg" in page
    for url in ("/static/favicon.svg", "/favicon.ico"):
        r = client.get(url)
        assert r.status_code == 200 and r.mimetype == "image/svg+xml" and r.data.startswith(b"<svg")


# ---------------------------------------------------------------- predictions


def test_real_fer_faces(client, fer_slice):
    """Held-out FER2013 faces as ~200 px JPEGs: every one answers; most are detected as faces."""
    found = 0
    for face in fer_slice["x_test"][:20]:
        r = post(client, face_jpeg(face))
        assert r.status_code == 200, r.json
        check_prediction(r.json)
        found += r.json["face_found"]
        if r.json["face_found"]:
            x, y, w, h = r.json["box"]
            assert 0 <= x and 0 <= y and x + w <= 200 and y + h <= 200 and w >= 48
    assert found >= 8, f"only {found}/20 FER faces detected"


def test_face_in_a_larger_scene_png(client, fer_slice):
    """A face (chosen as one the detector finds at 200 px) pasted at a known place in a 1600x1200 JPEG:
    detection runs downscaled, and the box comes back in full-size pixels, around the face."""
    face = next(f for f in fer_slice["x_test"] if post(client, face_jpeg(f)).json["face_found"])
    r = post(client, encode(scene_with_face(face, size=(1600, 1200), at=(700, 300), side=450), "JPEG", quality=85))
    assert r.status_code == 200 and r.json["face_found"], r.json
    x, y, w, h = r.json["box"]
    assert abs((x + w / 2) - 925) < 80 and abs((y + h / 2) - 525) < 100 and 250 < w < 600
    assert r.json["image_size"] == [1600, 1200]


def test_non_fer_photo_with_exif_rotation(client):
    """scikit-image's astronaut (a real photo, not FER), stored rotated with an EXIF orientation tag:
    the box is found on the upright image."""
    path = skimage_photo("astronaut.png")
    upright = Image.open(path).convert("RGB")
    r = post(client, encode(np.asarray(upright), "JPEG", quality=90))
    assert r.status_code == 200 and r.json["face_found"], r.json
    box = r.json["box"]
    assert 160 < box[0] + box[2] / 2 < 290 and 60 < box[1] + box[3] / 2 < 170  # Eileen Collins' face
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the pixels are stored turned the other way
    buf = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=90, exif=exif)
    rotated = post(client, buf.getvalue())
    assert rotated.status_code == 200 and rotated.json["face_found"]
    assert np.abs(np.array(rotated.json["box"]) - np.array(box)).max() <= 12


def test_no_face_predicts_centre_crop(client):
    yy, xx = np.mgrid[:300, :400]
    r = post(client, encode(((xx + yy) * 255 // 700).astype(np.uint8), "PNG"), "grad.png", mimetype="image/png")
    assert r.status_code == 200
    check_prediction(r.json)
    assert r.json["face_found"] is False and r.json["box"] is None


def test_torch_backend_agrees_with_onnx(client, fer_model, fer_slice):
    torch_client = create_app(str(fer_model["safetensors"]), rate_limit="off").test_client()
    data = face_jpeg(fer_slice["x_test"][3])
    a, b = post(client, data).json, post(torch_client, data).json
    assert a["box"] == b["box"]
    assert max(abs(a["probabilities"][c] - b["probabilities"][c]) for c in CLASSES) < 1e-4


def test_uploads_never_touch_disk(client, monkeypatch):
    """A 0.9 MB upload is parsed in memory (werkzeug would spool it to a temp file)."""
    import tempfile

    def refuse(*a, **k):
        raise AssertionError("an upload was written to disk")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    noise = np.random.default_rng(1).integers(0, 256, (550, 550, 3), dtype=np.uint8)
    data = encode(noise, "PNG")
    assert 800_000 < len(data) < 1_000_000
    r = post(client, data, "noise.png", mimetype="image/png")
    assert r.status_code == 200, r.json


# ---------------------------------------------------------------- errors: each a JSON {"error"} with its status


def error(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.data[:300])
    assert r.is_json and set(r.json) == {"error"}
    return r.json["error"]


def test_missing_field(client):
    assert "field 'file'" in error(post(client, None, extra={"other": "x"}), 400)
    assert "field 'file'" in error(post(client, face_jpeg(np.zeros((48, 48), np.uint8)), field="image"), 400)
    assert "field 'file'" in error(client.post("/api/predict"), 400)


def test_more_than_one_file(client, fer_slice):
    jpg = face_jpeg(fer_slice["x_test"][0])
    two = client.post(
        "/api/predict",
        content_type="multipart/form-data",
        data={"file": [(io.BytesIO(jpg), "a.jpg"), (io.BytesIO(jpg), "b.jpg")]},
    )
    assert "exactly one file" in error(two, 400)
    other = client.post(
        "/api/predict",
        content_type="multipart/form-data",
        data={"file": (io.BytesIO(jpg), "a.jpg"), "file2": (io.BytesIO(jpg), "b.jpg")},
    )
    assert "exactly one file" in error(other, 400)


def test_empty_file(client):
    assert "empty" in error(post(client, b""), 400)


@pytest.mark.parametrize("extra_bytes", [20_000, 2_000_000])
def test_file_over_1mb(client, extra_bytes):
    """Just over 1 MB (inside the multipart allowance: the file's own size is checked) and far over it."""
    data = b"\xff\xd8\xff\xe0" + bytes(1024 * 1024 + extra_bytes)
    assert "limit is 1 MB" in error(post(client, data), 413)


@pytest.mark.parametrize("data", [b"hello, I am text", b"GIF89a" + bytes(100), b"%PDF-1.4\n" + bytes(100)])
def test_not_an_accepted_image_whatever_the_name_says(client, data):
    assert "not an image in a format read here (JPEG, PNG, WebP or BMP" in error(
        post(client, data, "photo.jpg", mimetype="image/jpeg"), 415
    )


@pytest.mark.parametrize("fmt", ["WEBP", "BMP"])
def test_webp_and_bmp_are_accepted(client, fer_slice, fmt):
    """What `fixmatch predict` and training read, the page takes too (a browser shows both)."""
    upload = encode(np.asarray(Image.open(io.BytesIO(face_jpeg(fer_slice["x_test"][0])))), fmt)
    r = post(client, upload, f"face.{fmt.lower()}", mimetype=f"image/{fmt.lower()}")
    assert r.status_code == 200 and r.json["image_size"] == [200, 200], r.json
    junk = {"WEBP": b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(64), "BMP": b"BM" + bytes(100)}[fmt]
    assert "corrupt or truncated" in error(post(client, junk), 400)


def test_corrupt_and_truncated(client, fer_slice):
    jpg, png = face_jpeg(fer_slice["x_test"][0]), encode(fer_slice["x_test"][0], "PNG")
    for bad in (
        jpg[: len(jpg) // 2],
        png[: len(png) // 2],
        b"\xff\xd8\xff" + bytes(500),
        b"\x89PNG\r\n\x1a\n" + os.urandom(300),
    ):
        assert "corrupt or truncated" in error(post(client, bad), 400)


def test_pixel_bomb_refused_before_decoding(client):
    bomb = png_bomb(100_000, 100_000)
    assert len(bomb) < 200
    assert "megapixels" in error(post(client, bomb, "bomb.png", mimetype="image/png"), 413)
    assert "megapixels" in error(post(client, png_bomb(8000, 6000), "b.png", mimetype="image/png"), 413)


def test_progressive_jpeg_cpu_bomb_refused_at_once(client, monkeypatch):
    """~1 MB, 6324x6324, ~10,000 scans: minutes of CPU to decode; refused in well under a second."""
    bomb = progressive_jpeg_bomb()
    assert 1_000_000 < len(bomb) <= 1024 * 1024
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or None)
    r = post(client, bomb)
    assert "scans" in error(r, 422)
    assert not decoded  # counted from the headers, never decoded


def test_a_stray_byte_before_the_first_scan_hides_nothing(client):
    """libjpeg skips a 0x00 where a marker should be and decodes every scan after it; the scan
    count used to stop there (0 scans: the bomb went to the decoder, stopped only by the clock)."""
    bomb = progressive_jpeg_bomb()
    first = bomb.index(b"\xff\xda")
    assert "scans" in error(post(client, bomb[:first] + b"\x00" + bomb[first:]), 422)


def test_decode_deadline(client, monkeypatch):
    """A decode that passes the checks but runs long is abandoned at the deadline (checks loosened
    here so that the bomb reaches the decoder)."""
    from fixmatch.imaging import decoding

    monkeypatch.setattr(decoding, "MAX_SCANS", 10**6)
    monkeypatch.setattr(decoding, "MAX_SCAN_MEGAPIXELS", 10**9)
    monkeypatch.setattr(decoding, "DECODE_SECONDS", 0.5)
    assert "to decode" in error(post(client, progressive_jpeg_bomb()), 422)  # undefended: minutes


def test_ordinary_progressive_and_big_jpegs_still_pass(client):
    rng = np.random.default_rng(2)
    photo = rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    for kw in ({"progressive": True, "quality": 40}, {"quality": 30}):
        data = encode(photo, "JPEG", **kw)
        assert len(data) < 1024 * 1024
        r = post(client, data)
        assert r.status_code == 200 and r.json["image_size"] == [2000, 1500], r.json


def test_http_details(client, fer_slice):
    r = client.get("//evil.example/x", headers={"Host": "evil.example"})
    assert r.status_code == 404 and "Location" not in r.headers
    r = client.get("/api/predict")
    assert r.status_code == 405 and "POST" in r.headers["Allow"]
    assert r.headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    over = b"\xff\xd8\xff\xe0" + bytes(1024 * 1024 - 3)  # one byte over the limit
    assert "1,048,577 bytes" in error(post(client, over), 413)
    jpg = face_jpeg(fer_slice["x_test"][0])
    fields = {f"f{i}": "x" for i in range(20)}
    many = post(client, jpg, extra=fields)
    assert "too many parts" in error(many, 400)


def test_filename_is_never_reflected(client):
    evil = '<script>alert("x")</script>.jpg'
    r = post(client, b"plain text", evil)
    assert r.status_code == 415 and b"<script>" not in r.data and b"alert" not in r.data


def test_unknown_routes_and_methods_are_json(client):
    assert error(client.get("/nope"), 404) == "not found"
    assert error(client.get("/api/predict"), 405) == "method not allowed"
    assert error(client.get("/static/../../etc/passwd"), 404) == "not found"


def test_server_survives_bad_input(client, fer_slice):
    for junk in (b"", b"xx", png_bomb(), b"\xff\xd8\xff" + bytes(10)):
        post(client, junk)
    assert post(client, face_jpeg(fer_slice["x_test"][1])).status_code == 200


def test_rate_limit_per_client(fer_model, fer_slice):
    app = create_app(str(fer_model["onnx"]), rate_limit="2/minute")
    c = app.test_client()
    jpg = face_jpeg(fer_slice["x_test"][0])
    assert [post(c, jpg).status_code for _ in range(2)] == [200, 200]
    r = post(c, jpg)
    assert "too many requests" in error(r, 429)
    assert 0 < int(r.headers["Retry-After"]) <= 60
    other = c.post("/api/predict", data={"file": (io.BytesIO(jpg), "a.jpg")}, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert other.status_code == 200  # the limit is per client address
    assert c.get("/healthz").status_code == 200  # health checks are never limited


# ---------------------------------------------------------------- model lookup and the command line


def test_rate_limit_option_parsing():
    from fixmatch.serve.ratelimit import parse_rate_limit

    assert parse_rate_limit("off") is None and parse_rate_limit("OFF") is None
    assert parse_rate_limit("60/minute") == (60, 60) and parse_rate_limit("5 per second") == (5, 1)
    with pytest.raises(UserError, match="rate-limit"):
        parse_rate_limit("lots please")


def test_zoo_model_onnx_first_and_clear_error_when_missing(fer_model, tmp_path, monkeypatch):
    import shutil

    import fixmatch.inference.model_files
    from fixmatch.inference.predictor import resolve_model

    monkeypatch.setattr(fixmatch.inference.model_files, "ZOO_DIR", tmp_path)
    with pytest.raises(UserError, match="the fer2013 model is not installed"):
        resolve_model("fer2013")
    shutil.copy(fer_model["onnx"], tmp_path / "fer2013.onnx")
    assert resolve_model("fer2013") == tmp_path / "fer2013.onnx"


def test_cli_serve_reports_a_missing_model(tmp_path, capsys):
    from fixmatch.cli import main

    assert main(["serve", "--model", str(tmp_path / "nope.onnx")]) == 2
    assert "model not found" in capsys.readouterr().err


def test_gunicorn_workers_serve(fer_model, fer_slice):
    """`fixmatch serve --workers 2` runs gunicorn; both workers load the model and answer."""
    pytest.importorskip("gunicorn", reason="gunicorn is in the serve extra")
    proc, base = start_server(fer_model["onnx"], "--rate-limit", "off")
    try:
        body, boundary = multipart(face_jpeg(fer_slice["x_test"][2]))
        req = urllib.request.Request(
            base + "/api/predict",
            data=body,
            method="POST",
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        import json

        check_prediction(json.loads(urllib.request.urlopen(req, timeout=10).read()))
    finally:
        stop_server(proc)


def test_serving_an_onnx_model_never_imports_torch(fer_model):

    code = (
        "import sys; from fixmatch.inference.predictor import check_model; from fixmatch.serve.app import create_app; "
        f"check_model({str(fer_model['onnx'])!r}); create_app({str(fer_model['onnx'])!r}); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_a_class_name_that_is_not_utf8_is_shown_escaped_not_a_500(digits_model, tmp_path):
    """A class folder named with a byte that is not UTF-8 (bad\\xff) became a class name the page could
    not encode: the page, the info and the answer show it escaped."""
    import json
    import os

    import onnx

    model = onnx.load(str(digits_model["onnx"]))
    prop = next(p for p in model.metadata_props if p.key == "fixmatch")
    names = [os.fsdecode(b"bad\xff"), *digits_model["class_names"][1:]]
    prop.value = json.dumps({**json.loads(prop.value), "class_names": names})
    onnx.save(model, str(tmp_path / "odd.onnx"))
    client = create_app(str(tmp_path / "odd.onnx"), rate_limit="off").test_client()
    page = client.get("/")
    assert page.status_code == 200 and "bad\\xff" in page.text
    assert client.get("/api/model").json["classes"][0] == "bad\\xff"
