"""ONNX / safetensors export: the file carries its metadata and reproduces torch's outputs."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from fixmatch.cli import main
from fixmatch.errors import UserError

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the serve extra")


def run_onnx(path, pixels: np.ndarray) -> dict:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"pixels": pixels.astype(np.float32)})))


@pytest.mark.parametrize("batch", [1, 100])
def test_onnx_matches_torch_on_real_images(fer_model, fer_slice, batch):
    images = fer_slice["x_test"][:batch, None].copy()  # real held-out FER2013 faces, uint8 (N, 1, 48, 48)
    loaded = fer_model["loaded"]
    with torch.no_grad():
        logits = loaded.model(loaded.normalize(torch.from_numpy(images))).numpy()
    expected = loaded.probabilities(torch.from_numpy(images)).numpy()
    out = run_onnx(fer_model["onnx"], images)
    assert out["probabilities"].shape == (batch, 7)
    assert np.abs(out["probabilities"] - expected).max() < 1e-4
    assert np.abs(out["logits"] - logits).max() < 1e-4


def test_onnx_metadata_is_self_contained(fer_model):
    from fixmatch.inference.onnx_export import read_onnx_meta

    meta = read_onnx_meta(fer_model["onnx"])
    assert meta["class_names"] == ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
    assert meta["image_shape"] == [1, 48, 48]
    assert len(meta["mean"]) == len(meta["std"]) == 1
    assert meta["input"]["normalized_inside"] is True
    assert meta["card"]["note"] == "test model"


def test_cli_export_both_formats(fer_model, fer_slice, tmp_path, capsys):
    from fixmatch.inference.loading import load_model

    card = tmp_path / "card.json"
    card.write_text(json.dumps({"test_accuracy": 0.61}))
    onnx_path, st_path = tmp_path / "m.onnx", tmp_path / "m.safetensors"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(fer_model["checkpoint"]),
                "--onnx",
                str(onnx_path),
                "--safetensors",
                str(st_path),
                "--card-json",
                str(card),
            ]
        )
        == 0
    )
    images = torch.from_numpy(fer_slice["x_test"][:16, None].copy())
    from_st = load_model(str(st_path))
    assert from_st.meta["card"] == {"test_accuracy": 0.61}
    onnx_probs = run_onnx(onnx_path, images.numpy())["probabilities"]
    assert np.abs(onnx_probs - from_st.probabilities(images).numpy()).max() < 1e-4


def test_read_onnx_meta_rejects_foreign_files(tmp_path):
    from fixmatch.inference.onnx_export import read_onnx_meta

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all \x00\xff")
    with pytest.raises(UserError, match="not a"):
        read_onnx_meta(junk)
    plain = tmp_path / "plain.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice
        torch.onnx.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), str(plain), dynamo=False)
    with pytest.raises(UserError, match="not a fixmatch ONNX export"):
        read_onnx_meta(plain)
