"""The int8 serving path: `fixmatch export --int8` writes a quantised twin calibrated on training
images only, measured beside the float model; serve and predict take the twin by default only where
it held its accuracy, and `--precision fp32` takes the float model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from fixmatch.cli import main
from fixmatch.inference import quantize
from fixmatch.inference.model_files import ZOO_DIR, read_onnx_meta
from fixmatch.inference.predict import load

pytest.importorskip("onnxruntime", reason="onnxruntime is in the serve extra")


def test_export_int8_calibrates_on_training_images_and_prints_both_accuracies(fer_model, tmp_path, capsys, monkeypatch):
    seen = []
    sample = quantize.calibration_sample
    monkeypatch.setattr(quantize, "calibration_sample", lambda x, *a: seen.append(np.asarray(x)) or sample(x, *a))
    npz = fer_model["run"].parent / "fer_slice.npz"
    out = tmp_path / "m.onnx"
    argv = ["export", "--checkpoint", str(fer_model["checkpoint"]), "--onnx", str(out), "--int8"]
    assert main([*argv, "--calibrate-on", str(npz)]) == 0
    printed = capsys.readouterr().out
    with np.load(npz) as d:
        x_train, x_test, y_test = d["x_train"], d["x_test"], d["y_test"]
    assert len(seen) == 1 and np.array_equal(seen[0][:, 0], x_train)  # the training split, never the test split
    twin = tmp_path / "m.int8.onnx"
    graph = onnx.load(str(twin)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)  # int8 weights
    meta = read_onnx_meta(twin)  # its checksum and graph hold
    assert meta["precision"] == "int8" and meta["quantization"]["calibration_images"] == len(x_train)
    for name, path in (("fp32", out), ("int8", twin)):
        probs = quantize.onnx_probabilities(path, x_test[:, None])
        accuracy = float((probs.argmax(1) == y_test).mean())
        assert meta["test_accuracy"][name] == pytest.approx(accuracy, abs=1e-6)
        assert f"{100 * accuracy:.2f}%" in printed


def test_export_int8_needs_its_data_and_an_onnx_path(fer_model, tmp_path, capsys):
    base = ["export", "--checkpoint", str(fer_model["checkpoint"])]
    assert main([*base, "--onnx", str(tmp_path / "m.onnx"), "--int8"]) == 2
    assert main([*base, "--safetensors", str(tmp_path / "m.safetensors"), "--int8", "--calibrate-on", "x"]) == 2
    assert "--calibrate-on DATA" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def twin_with_measurement(tmp_path, fp32: float, int8: float):
    """A copy of the zoo's fp32 and int8 files whose twin says it measured `fp32` and `int8`."""
    shutil.copy(ZOO_DIR / "fer2013.onnx", tmp_path / "m.onnx")
    meta = read_onnx_meta(ZOO_DIR / "fer2013.int8.onnx")
    meta["test_accuracy"] = {**meta["test_accuracy"], "fp32": fp32, "int8": int8}
    quantize.write_onnx_with_meta(onnx.load(str(ZOO_DIR / "fer2013.int8.onnx")), meta, tmp_path / "m.int8.onnx")
    return tmp_path / "m.onnx"


def test_the_twin_is_served_only_where_it_held_its_accuracy(tmp_path):
    held = twin_with_measurement(tmp_path, fp32=0.70, int8=0.696)
    assert load(str(held)).path.name == "m.int8.onnx"
    assert load(str(held), "fp32").path.name == "m.onnx"
    lost = twin_with_measurement(tmp_path, fp32=0.70, int8=0.694)
    assert load(str(lost)).path.name == "m.onnx"


def test_the_released_model_is_served_as_int8_within_half_a_point():
    predictor = load("fer2013")
    assert predictor.path == ZOO_DIR / "fer2013.int8.onnx"
    measured = predictor.meta["test_accuracy"]
    assert measured["split"] == "private" and measured["images"] == 3589
    assert measured["fp32"] - measured["int8"] <= 0.005
    assert predictor.meta["card"]["int8_accuracy"] == round(measured["int8"], 4)  # the page's card says it
    assert load("fer2013", "fp32").path == ZOO_DIR / "fer2013.onnx"
    assert (ZOO_DIR / "fer2013.int8.onnx").stat().st_size < 2_000_000  # the wheel grows by 1.6 MB


def test_predict_and_serve_take_the_precision_flag(tmp_path, capsys):
    face = tmp_path / "face.png"
    from PIL import Image

    Image.fromarray(np.full((48, 48), 128, np.uint8)).save(face)
    rows = {}
    for precision in ("int8", "fp32"):
        assert main(["predict", "--model", "fer2013", "--precision", precision, str(face)]) == 0
        rows[precision] = json.loads(capsys.readouterr().out)["probabilities"]
    assert rows["int8"] != rows["fp32"]


def test_the_served_workers_load_the_precision_asked_for():
    """`fixmatch serve`'s workers (gunicorn) take the twin by default and the float model with
    --precision fp32: the page's model info names the file each loaded."""
    import urllib.request

    from serve_fixtures import start_server, stop_server

    pytest.importorskip("gunicorn", reason="gunicorn is in the serve extra")
    for flags, served in (([], "fer2013.int8.onnx"), (["--precision", "fp32"], "fer2013.onnx")):
        proc, base = start_server("fer2013", "--rate-limit", "off", *flags, workers=1)
        try:
            info = json.loads(urllib.request.urlopen(base + "/api/model", timeout=10).read())
            assert info["file"] == served
        finally:
            stop_server(proc)
