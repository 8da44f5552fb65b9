"""`fixmatch predict` gives the answers of `fixmatch evaluate` and of the web page.

An image that is already a face crop at the model's input size (FER2013's own 48x48 images) is
classified as it is, as evaluate classifies the test split; a photo over the upload limit is
classified on the copy the page sends (static/app.js redraws it at 1280 px and sends a JPEG).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from serve_fixtures import encode, scene_with_face
from shared_data import SHARED, fer_private_test

pytest.importorskip("flask", reason="the serve extra is not installed")
from repo import REPO

from fixmatch.cli import main  # noqa: E402

APP_JS = REPO / "src" / "fixmatch" / "serve" / "static" / "app.js"


def needs_fer():
    if not (SHARED / "fer2013.npz.xz").is_file():
        pytest.skip(f"needs the shared FER2013 copy in {SHARED}")


def predict_rows(capsys, model: str, paths: list[Path], *flags: str) -> list[dict]:
    assert main(["predict", "--model", model, *flags, *map(str, paths)]) == 0
    out = json.loads(capsys.readouterr().out)
    return out if isinstance(out, list) else [out]


def evaluate_probabilities(images: np.ndarray) -> np.ndarray:
    """What `fixmatch evaluate --model fer2013` computes for each test image (its torch model, its
    predict_logits), as probabilities."""
    import torch

    from fixmatch.inference.evaluate import predict_logits
    from fixmatch.inference.loading import load_model

    loaded = load_model("fer2013")
    logits = predict_logits(loaded.model, loaded.normalize, torch.from_numpy(images[:, None]), 256, "cpu")
    return logits.float().softmax(1).numpy()


def agree_image_for_image(rows: list[dict], probs: np.ndarray) -> None:
    """predict's probabilities equal evaluate's up to the backends' float32 rounding (ONNX or torch:
    different kernels, ~1e-6) and predict's 5-decimal output; so the labels are equal wherever
    evaluate's top two are further apart than that."""
    classes = list(rows[0]["probabilities"])
    got = np.array([[r["probabilities"][c] for c in classes] for r in rows])
    assert np.abs(got - probs).max() < 1e-4
    top2 = np.sort(probs, 1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2e-4
    assert clear.mean() > 0.9
    assert [r["label"] for r, c in zip(rows, clear) if c] == [classes[int(i)] for i in probs.argmax(1)[clear]]


def test_privatetest_crops_are_classified_as_evaluate_does(tmp_path, capsys):
    """FER2013 PrivateTest images written as PNG files: predict takes each 48x48 crop as the face
    it is (no second detection inside it) and gives evaluate's prediction for every image (the
    float model; the int8 twin that predict takes by default: the test below)."""
    needs_fer()
    x, _ = fer_private_test(64)
    paths = []
    for i, face in enumerate(x):
        paths.append(tmp_path / f"{i:03d}.png")
        paths[-1].write_bytes(encode(face, "PNG"))
    rows = predict_rows(capsys, "fer2013", paths, "--precision", "fp32")
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    assert all(r["framing"] == "face" and r["face_found"] and r["box"] == [0, 0, 48, 48] for r in rows)
    agree_image_for_image(rows, evaluate_probabilities(x))


@pytest.mark.slow  # all 3,589 PrivateTest images through predict and evaluate
def test_all_of_privatetest_predict_and_evaluate_agree(tmp_path, capsys):
    """The float model image for image; the int8 twin (what predict and the server take by default)
    within 0.5 points of evaluate's accuracy."""
    needs_fer()
    x, y = fer_private_test()
    paths = []
    for i, face in enumerate(x):
        paths.append(tmp_path / f"{i:04d}.png")
        Image.fromarray(face).save(paths[-1])
    served = predict_rows(capsys, "fer2013", paths)
    rows = predict_rows(capsys, "fer2013", paths, "--precision", "fp32")
    probs = evaluate_probabilities(x)
    agree_image_for_image(rows, probs)
    assert main(["evaluate", "--model", "fer2013", "--data-dir", str(SHARED), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    classes = list(rows[0]["probabilities"])
    predicted = np.array([classes.index(r["label"]) for r in rows])
    top2 = np.sort(probs, 1)[:, -2:]
    near_ties = int((top2[:, 1] - top2[:, 0] <= 2e-4).sum())  # the only images the backends may split
    assert abs(float((predicted == y).mean()) - report["accuracy"]) <= near_ties / len(y)
    int8 = np.array([classes.index(r["label"]) for r in served])
    assert abs(float((int8 == y).mean()) - report["accuracy"]) <= 0.005


# ---------------------------------------------------------------- big photos: what the page sends
def page_upload(data: bytes) -> bytes:
    """static/app.js's shrinkIfTooLarge, restated with PIL standing in for the browser's canvas:
    if (file.size <= MAX_BYTES) return file;                         // 1 MB, the server's limit
    scale = Math.min(1, SEND_SIDE / Math.max(naturalWidth, naturalHeight));   // 1280
    canvas.width = Math.max(1, Math.round(naturalWidth * scale));   // likewise the height
    drawImage(img, ...)        // upright: the browser applies the EXIF orientation
    for (quality of [0.9, 0.8, 0.6]) toBlob("image/jpeg", quality) -> the first <= MAX_BYTES
    """
    if len(data) <= 1024 * 1024:
        return data
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    scale = min(1, 1280 / max(image.size))
    size = tuple(max(1, int(np.floor(v * scale + 0.5))) for v in image.size)
    canvas = image.resize(size, Image.Resampling.BILINEAR)
    for quality in (90, 80, 60):
        sent = encode(np.asarray(canvas), "JPEG", quality=quality)
        if len(sent) <= 1024 * 1024:
            return sent
    return data


def big_photo(face: np.ndarray, seed: int) -> bytes:
    """A 4000x3000 phone-sized JPEG (several MB: sensor noise) with a FER face off the centre."""
    scene = scene_with_face(face, size=(4000, 3000), at=(2300, 1100), side=900)
    noise = np.random.default_rng(seed).normal(0, 6, scene.shape)
    return encode(np.clip(scene + noise, 0, 255).astype(np.uint8), "JPEG", quality=92)


def test_a_big_photo_gets_the_pages_answer(fer_model, fer_slice, tmp_path, capsys):
    """A photo over the upload limit through `fixmatch predict` and through the page (its upload:
    the shrunk JPEG): the same framed image, the same face box, the same scores."""
    from fixmatch.serve import create_app

    client = create_app(str(fer_model["onnx"]), rate_limit="off").test_client()
    for k in range(2):
        photo = tmp_path / f"phone{k}.jpg"
        photo.write_bytes(big_photo(fer_slice["x_test"][k], seed=k))
        assert photo.stat().st_size > 1024 * 1024
        sent = page_upload(photo.read_bytes())
        assert len(sent) <= 1024 * 1024
        web = client.post(
            "/api/predict", data={"file": (io.BytesIO(sent), "photo.jpg")}, content_type="multipart/form-data"
        ).json
        (cli,) = predict_rows(capsys, str(fer_model["onnx"]), [photo])
        assert cli["image_size"] == web["image_size"] == [1280, 960]
        assert cli["face_found"] == web["face_found"] and cli["box"] == web["box"], (cli, web)
        assert cli["label"] == web["label"]
        assert max(abs(cli["probabilities"][c] - web["probabilities"][c]) for c in cli["probabilities"]) < 1e-4


def test_a_small_or_undrawable_file_is_sent_as_it_is(tmp_path):
    from fixmatch.inference.page_upload import page_copy

    small = tmp_path / "small.jpg"
    small.write_bytes(encode(np.zeros((3000, 4000), np.uint8), "JPEG", quality=90))  # flat: a few KB
    assert small.stat().st_size <= 1024 * 1024 and page_copy(small) is None
    tiff = tmp_path / "big.tif"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1100, 1100), np.uint8)).save(tiff)
    assert tiff.stat().st_size > 1024 * 1024 and page_copy(tiff) is None  # a browser cannot draw a TIFF


def test_the_page_sends_the_upright_photo_at_1280(tmp_path):
    """EXIF orientation 6 (stored on its side): the page's copy is upright, 1280 on its longest side."""
    from fixmatch.inference.page_upload import page_copy

    upright = np.random.default_rng(1).integers(0, 256, (3000, 2000, 3), np.uint8)  # portrait
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # landscape on disk
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    photo = tmp_path / "portrait.jpg"
    stored.save(photo, quality=90, exif=exif.tobytes())
    sent = Image.open(io.BytesIO(page_copy(photo)))
    assert sent.format == "JPEG" and sent.size == (853, 1280)  # 2000 * 1280 / 3000 = 853.3


def test_the_page_reads_the_constants_predict_follows(fer_model):
    """The page's script takes the limit, the side and the qualities from the page (written once, in
    page_upload.py), never from literals of its own."""
    from fixmatch.inference.page_upload import SEND_QUALITIES, SEND_SIDE
    from fixmatch.serve import create_app
    from fixmatch.serve.upload import MAX_FILE_BYTES

    html = create_app(str(fer_model["onnx"]), rate_limit="off").test_client().get("/").get_data(as_text=True)
    body = re.search(r"<body[^>]*>", html).group(0)
    assert f'data-upload-limit="{MAX_FILE_BYTES}"' in body and f'data-send-side="{SEND_SIDE}"' in body
    assert f'data-send-qualities="{" ".join(map(str, SEND_QUALITIES))}"' in body
    script = APP_JS.read_text()
    assert "document.body.dataset.uploadLimit" in script and "document.body.dataset.sendSide" in script
    assert "of SEND_QUALITIES)" in script
    assert not re.search(r"\b1280\b|1024 \* 1024|\[0\.9", script)
