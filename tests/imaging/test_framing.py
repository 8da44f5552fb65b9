"""Predict and serve frame a photo the way the model's training data was framed: each dataset says
how (face / resize / crop), the trained model carries it, and for a user's folders the served input
equals what the decode cache fed training."""

from __future__ import annotations

import numpy as np
from PIL import Image
from shared_data import cifar_images, needs_shared_data

from fixmatch.data import DATASETS
from fixmatch.data.image_cache import decode
from fixmatch.inference.preprocess import read_file


def test_each_dataset_says_how_its_photos_are_framed():
    assert DATASETS["fer2013"].framing == "face" and DATASETS["folders"].framing == "crop"
    assert all(spec.framing == "resize" for name, spec in DATASETS.items() if name not in ("fer2013", "folders"))


@needs_shared_data
def test_a_folders_model_sees_at_predict_time_what_training_saw(tmp_path):
    """Non-square RGB and grey images, PNG and JPEG, at sizes the model does not have."""
    pixels = cifar_images(4)
    cases = [
        (np.tile(pixels[0], (2, 3, 1)), "png", 3),
        (np.tile(pixels[1], (3, 1, 1)), "jpg", 3),
        (np.tile(pixels[2][..., 0], (2, 2)), "png", 1),
        (np.tile(pixels[3], (5, 4, 1)), "jpg", 1),
    ]
    for k, (array, ext, channels) in enumerate(cases):
        path = tmp_path / f"img{k}.{ext}"
        Image.fromarray(array).save(path)
        meta = {"image_shape": [channels, 24, 24], "preprocess": "crop", "dataset": "folders"}
        served = read_file(path, meta)
        assert served["framing"] == "crop" and served["pixels"].shape == (channels, 24, 24)
        assert np.array_equal(served["pixels"], decode(path, 24, channels)), path.name
