"""The released FER2013 model: it loads by name, its ONNX twin computes the same function, and it
is as accurate on real PrivateTest images as its model card says (checked on a slice, for speed)."""

import hashlib
import json

import numpy as np
import pytest
import torch
from shared_data import SHARED

from fixmatch.inference.loading import ZOO_DIR, load_model

pytestmark = pytest.mark.slow  # the released WRN on real PrivateTest images


@pytest.fixture(scope="module")
def private_test():
    if not (SHARED / "fer2013.npz.xz").exists():
        pytest.skip(f"needs the FER2013 copy at {SHARED}/fer2013.npz.xz")
    from fixmatch.data import load_dataset

    data = load_dataset("fer2013", SHARED, fer_test="private")
    return data.x_test[:600], data.y_test[:600]


def test_zoo_model_matches_its_card_on_private_test(private_test):
    torch.set_num_threads(1)
    loaded = load_model("fer2013")
    card = loaded.meta["card"]
    assert loaded.class_names == ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
    assert loaded.meta["image_shape"] == [1, 48, 48] and card["parameters"] == 1_466_935
    x, y = private_test
    accuracy = float((loaded.probabilities(x).argmax(1) == y).float().mean())
    # the card states 70.74% on all 3,589 images; 600 of them give it within sampling error
    assert abs(accuracy - card["privatetest_accuracy"]) < 0.06, accuracy
    assert card["privatetest_accuracy"] == pytest.approx(0.7074, abs=1e-4)


def test_zoo_onnx_equals_torch(private_test):
    ort = pytest.importorskip("onnxruntime")
    loaded = load_model("fer2013")
    session = ort.InferenceSession(str(ZOO_DIR / "fer2013.onnx"), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["fixmatch"])
    assert meta["card"]["privatetest_accuracy"] == loaded.meta["card"]["privatetest_accuracy"]
    x = private_test[0][:64]
    onnx_probs = session.run(["probabilities"], {"pixels": x.float().numpy()})[0]
    assert np.abs(onnx_probs - loaded.probabilities(x).numpy()).max() < 1e-4


def test_a_model_file_without_an_architecture_variant_loads_with_the_old_wiring(private_test, tmp_path):
    """Files written before `arch_variant` existed were all built with fixmatch 0.1's wiring."""
    from safetensors.torch import load_file, save_file

    from fixmatch.inference.model_files import META_KEY, WEIGHTS_DIGEST, read_safetensors_meta, safetensors_data

    zoo = ZOO_DIR / "fer2013.safetensors"
    meta = read_safetensors_meta(zoo)
    assert meta.pop("arch_variant") == "fixmatch-0.1"
    old = tmp_path / "old.safetensors"
    tensors = load_file(str(zoo))
    save_file(tensors, str(old), metadata={META_KEY: json.dumps(meta)})  # its weights' checksum, as written
    meta[WEIGHTS_DIGEST] = hashlib.sha256(safetensors_data(old.read_bytes())).hexdigest()
    save_file(tensors, str(old), metadata={META_KEY: json.dumps(meta)})
    x = private_test[0][:32]
    torch.testing.assert_close(load_model(str(old)).probabilities(x), load_model("fer2013").probabilities(x))
