"""The Python API, for notebooks and scripts: what the command line does, as functions.

    import fixmatch
    summary = fixmatch.train(dataset="digits", algorithm="fixmatch", steps=300, progress=False)
    model = fixmatch.load(summary["out"])          # a run, .pt, .safetensors, .onnx or a zoo name
    model.predict(["face.jpg", pil_image, uint8_array])   # label, confidence, probabilities each
    fixmatch.evaluate(model)                       # accuracy, per class, confusion matrix

Images are framed exactly as `fixmatch predict` and the web page frame them (the model's own
framing: its face, its centre square, or the whole image resized). Bad input raises
fixmatch.errors.UserError with the message the CLI prints.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fixmatch.config import TrainConfig, resolve
from fixmatch.errors import UserError
from fixmatch.imaging.decoding import MAX_PIXELS
from fixmatch.inference.model_files import ZOO
from fixmatch.inference.predict import load as load_predictor
from fixmatch.inference.preprocess import open_file, prepare


def train(config: TrainConfig | None = None, log=print, **options) -> dict:
    """Train one run (`fixmatch train`): a TrainConfig and/or its fields as keywords (keywords win).
    Returns the run's summary (also in RUN/summary.json); RUN is summary["out"]."""
    from fixmatch.training.train import train as train_run  # deferred: torch (`import fixmatch` loads none)

    unknown = set(options) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise UserError(f"unknown training options: {', '.join(sorted(unknown))} (see `fixmatch train --help`)")
    return train_run(resolve(dataclasses.replace(config or TrainConfig(), **options)), log=log)


class Model:
    """A trained model ready to label images (the ONNX runtime for .onnx files, else torch)."""

    def __init__(self, predictor: Any, source: str):
        self.predictor, self.source = predictor, source
        self.meta: dict = predictor.meta

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def predict(self, images) -> dict | list[dict]:
        """One image or a list of them: file paths, PIL images or uint8 arrays (H, W) or (H, W, C).
        Each -> {"label", "confidence", "probabilities": {class: p}, "framing", ...}."""
        single = not isinstance(images, (list, tuple))
        rows = [self._prepare(image) for image in ([images] if single else images)]
        probs = self.predictor.probabilities(np.stack([r.pop("pixels") for r in rows])) if rows else []
        names = self.class_names
        for row, p in zip(rows, probs):
            top = int(np.argmax(p))
            row.update(label=names[top], confidence=float(p[top]), probabilities=dict(zip(names, map(float, p))))
        return rows[0] if single else rows

    def _prepare(self, image) -> dict:
        if isinstance(image, (str, Path)):
            try:
                image = open_file(image, self.meta)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                raise UserError(f"cannot read image {image}: {type(e).__name__}: {e}") from None
        elif isinstance(image, np.ndarray):
            if (
                image.dtype != np.uint8
                or image.ndim not in (2, 3)
                or (image.ndim == 3 and image.shape[2] not in (1, 3, 4))
            ):
                raise UserError(
                    f"an image array must be uint8 (H, W) or (H, W, 1|3|4), got {image.dtype} {image.shape}"
                )
            check_size(image.shape[1], image.shape[0])  # before fromarray copies it (a broadcast array is free)
            image = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
        elif isinstance(image, Image.Image):
            check_size(*image.size)
        else:
            raise UserError(f"cannot predict on a {type(image).__name__}: give a path, a PIL image or a uint8 array")
        try:
            return prepare(image, self.meta)
        except ValueError as e:  # a mode Pillow cannot convert to grey or RGB (LAB, La)
            raise UserError(f"cannot predict on a {image.mode} image ({e}): convert it to RGB or L first") from None


def check_size(width: int, height: int) -> None:
    """The bounds a decoded file meets (imaging/decoding.py), for arrays and PIL images handed in
    directly: checked before any pixel is copied."""
    if width < 1 or height < 1:
        raise UserError(f"the image is empty ({width}x{height} pixels)")
    if width * height > MAX_PIXELS:
        raise UserError(
            f"the image has {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels "
            "(resize it first)"
        )


def load(source: str | Path) -> Model:
    """Any model the CLI can load: a run directory, a .pt checkpoint, a .safetensors or .onnx
    export, or a zoo name such as "fer2013"."""
    return Model(load_predictor(str(source)), str(source))


def evaluate(model: Model | str | Path, dataset: str | None = None, data_dir=None, fer_test: str | None = None) -> dict:
    """Accuracy, per-class accuracy and confusion matrix on a dataset's test split (`fixmatch
    evaluate`); a run's own dataset and data folder by default."""
    # deferred: torch (`import fixmatch` loads none)
    from fixmatch.inference.evaluate import evaluate_on_dataset
    from fixmatch.inference.loading import load_model

    source = model.source if isinstance(model, Model) else str(model)
    loaded = load_model(source)
    run_config = saved_run_config(source)
    dataset = dataset or run_config.get("dataset") or loaded.meta.get("dataset")
    if not dataset:
        raise UserError(
            "give --dataset (dataset= in Python): this model file does not say which dataset it was trained on"
        )
    same = run_config.get("dataset") == dataset
    data_dir = data_dir or (run_config.get("data_dir") if same else None)
    fer_test = fer_test or (run_config.get("fer_test") if same else None) or "private"
    return evaluate_on_dataset(loaded, dataset, data_dir, fer_test, run_config=run_config)


def saved_run_config(source: str) -> dict:
    """The training config saved in a checkpoint or run directory ({} for exported and zoo models)."""
    from fixmatch.training.checkpoint import load_checkpoint  # deferred: torch (`import fixmatch` loads none)

    path = Path(source)
    if source in ZOO or path.suffix in (".safetensors", ".onnx"):
        return {}
    config = load_checkpoint(path)["meta"].get("config")
    return config if isinstance(config, dict) else {}
