"""`fixmatch predict` and `fixmatch evaluate` as a user runs them, and the page agreeing with predict."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image
from serve_fixtures import encode, face_jpeg, scene_with_face

pytest.importorskip("flask", reason="the serve extra is not installed")
from fixmatch.cli import main  # noqa: E402

FER_CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]


def run_json(capsys, argv) -> object:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_agrees_with_the_page_on_an_off_centre_face(fer_model, fer_slice, tmp_path, capsys):
    """The same photo through `fixmatch predict` and through the web API: the same face, the same scores."""
    from fixmatch.serve import create_app

    client = create_app(str(fer_model["onnx"]), rate_limit="off").test_client()

    def page(data):
        return client.post(
            "/api/predict", data={"file": (io.BytesIO(data), "p.jpg")}, content_type="multipart/form-data"
        ).json

    face = next(f for f in fer_slice["x_test"] if page(encode(scene_with_face(f), "JPEG", quality=90))["face_found"])
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(encode(scene_with_face(face), "JPEG", quality=90))
    web = page(photo.read_bytes())
    for model in (fer_model["onnx"], fer_model["safetensors"]):  # ONNX and torch backends
        cli = run_json(capsys, ["predict", "--model", str(model), str(photo)])
        assert cli["face_found"] is True and cli["box"] == web["box"], (cli, web)
        x, y, w, h = cli["box"]
        assert abs(x + w / 2 - 670) < 60 and abs(y + h / 2 - 410) < 60  # the pasted face, not the centre
        assert cli["label"] == web["label"]
        assert max(abs(cli["probabilities"][c] - web["probabilities"][c]) for c in FER_CLASSES) < 1e-4


def test_predict_folders_to_csv_with_bad_files(fer_model, fer_slice, tmp_path, capsys):
    root = tmp_path / "photos"
    (root / "nested" / "deeper").mkdir(parents=True)
    for i, name in enumerate(["a.jpg", "nested/b.png", "nested/deeper/c.JPG"]):
        (root / name).write_bytes(
            face_jpeg(fer_slice["x_test"][i]) if name.lower().endswith("jpg") else encode(fer_slice["x_test"][i], "PNG")
        )
    (root / "nested" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "notes.txt").write_text("not an image, not listed")
    loose = tmp_path / "loose.png"
    loose.write_bytes(encode(fer_slice["x_test"][5], "PNG"))
    out = tmp_path / "preds.csv"
    assert (
        main(
            [
                "predict",
                "--model",
                str(fer_model["onnx"]),
                str(root),
                str(loose),
                str(tmp_path / "missing.jpg"),
                "--csv",
                str(out),
            ]
        )
        == 0
    )
    assert "wrote 6 rows" in capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == [
        str(root / "a.jpg"),
        str(root / "nested/b.png"),
        str(root / "nested/broken.jpg"),
        str(root / "nested/deeper/c.JPG"),
        str(loose),
        str(tmp_path / "missing.jpg"),
    ]
    assert list(rows[0]) == ["path", "label", "confidence", "face_found", "error", *FER_CLASSES]
    good = [r for r in rows if not r["error"]]
    assert len(good) == 4
    for r in good:
        probs = [float(r[c]) for c in FER_CLASSES]
        assert abs(sum(probs) - 1) < 1e-3 and r["label"] == FER_CLASSES[int(np.argmax(probs))]
        assert float(r["confidence"]) == max(probs) and r["face_found"] in ("true", "false")
    # JPEG's magic, then garbage: the decoding policy's words, which train's skipped.txt uses too
    assert rows[2]["error"].startswith("the JPEG file is corrupt or truncated") and rows[2]["label"] == ""
    assert rows[5]["error"] == "file not found"


def test_predict_json_for_a_folder_and_errors(fer_model, fer_slice, tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(encode(fer_slice["x_test"][0], "PNG"))
    rows = run_json(capsys, ["predict", "--checkpoint", str(fer_model["onnx"]), str(tmp_path)])
    assert isinstance(rows, list) and rows[0]["path"].endswith("x.png") and rows[0]["label"] in FER_CLASSES
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert main(["predict", "--model", str(fer_model["onnx"]), str(bad)]) == 2  # nothing readable: exit 2
    captured = capsys.readouterr()
    assert "error" in json.loads(captured.out) and "could be read" in captured.err
    assert main(["predict", "--model", str(fer_model["onnx"]), str(tmp_path / "empty_dir_missing")]) == 2


def test_sixteen_bit_png_is_scaled_not_clipped(digits_model, tmp_path, capsys):
    """A 16-bit grey PNG of a digit gives the same input, and the same answer, as its 8-bit twin."""
    from fixmatch.inference.preprocess import upright

    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    wide = Image.open(io.BytesIO(encode(ramp, "PNG")))
    assert wide.mode.startswith("I")
    pixels = upright(wide, 1)
    assert np.abs(pixels.astype(int) - np.rint(ramp / 257.0)).max() <= 1
    assert (pixels == 255).mean() < 0.01  # convert('L') clipped 99.6% of them to 255
    digit = np.kron(digits_model["x_test"][0, 0], np.ones((8, 8), np.uint8))  # 64x64, 8-bit
    (tmp_path / "d8.png").write_bytes(encode(digit, "PNG"))
    (tmp_path / "d16.png").write_bytes(encode(digit.astype(np.uint16) * 257, "PNG"))
    a, b = run_json(
        capsys, ["predict", "--model", str(digits_model["onnx"]), str(tmp_path / "d8.png"), str(tmp_path / "d16.png")]
    )
    assert (
        a["label"] == b["label"]
        and max(abs(a["probabilities"][c] - b["probabilities"][c]) for c in digits_model["class_names"]) < 1e-4
    )


def test_serve_a_model_that_is_not_about_faces(digits_model):
    """Any trained model serves: its own classes on the page and in the API, no face detection."""
    from fixmatch.serve import create_app

    client = create_app(str(digits_model["onnx"]), rate_limit="off").test_client()
    info = client.get("/api/model").json
    assert info["classes"] == digits_model["class_names"] and info["preprocess"] == "resize"
    page = client.get("/").data.decode()
    assert "Image classification" in page and "expression" not in page.lower() and "0, 1, 2" in page
    hits = 0
    for x, y in zip(digits_model["x_test"][:20], digits_model["y_test"][:20]):
        big = np.kron(x[0], np.ones((16, 16), np.uint8))  # a 128x128 PNG of the 8x8 digit
        r = client.post(
            "/api/predict", data={"file": (io.BytesIO(encode(big, "PNG")), "d.png")}, content_type="multipart/form-data"
        )
        assert r.status_code == 200, r.json
        assert r.json["framing"] == "resize" and r.json["face_found"] is None and r.json["box"] is None
        assert list(r.json["probabilities"]) == digits_model["class_names"]
        hits += r.json["label"] == digits_model["class_names"][y]
    assert hits >= 10, f"{hits}/20 digits right: the resize path does not give the model what it was trained on"


def test_evaluate_uses_the_runs_data_and_prints_a_table(fer_model, tmp_path, monkeypatch, capsys):
    """From another folder, `evaluate --checkpoint RUN` finds the run's data (its saved config) and
    prints a table with class names; --json gives the same figures."""
    monkeypatch.chdir(tmp_path)  # no ./data here
    monkeypatch.delenv("FIXMATCH_DATA", raising=False)
    assert main(["evaluate", "--checkpoint", str(fer_model["run"])]) == 0
    table = capsys.readouterr().out
    assert "accuracy" in table and "confusion matrix" in table
    assert all(name in table for name in FER_CLASSES)
    report = run_json(capsys, ["evaluate", "--checkpoint", str(fer_model["run"]), "--json"])
    assert report["class_names"] == FER_CLASSES and report["num_test"] == 100
    assert f"{100 * report['accuracy']:.2f}%" in table


def test_cli_threads_must_be_positive(fer_model, tmp_path, capsys):
    img = tmp_path / "x.png"
    img.write_bytes(encode(np.zeros((48, 48), np.uint8), "PNG"))
    assert main(["predict", "--model", str(fer_model["onnx"]), "--threads", "0", str(img)]) == 2
    assert main(["evaluate", "--checkpoint", str(fer_model["run"]), "--threads", "0"]) == 2
    assert capsys.readouterr().err.count("--threads must be auto or a positive integer, got '0'") == 2
