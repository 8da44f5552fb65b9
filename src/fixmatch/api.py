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
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fixmatch.config import TrainConfig, check_known, load_yaml
from fixmatch.errors import UserError
from fixmatch.imaging.decoding import MAX_PIXELS
from fixmatch.inference.model_files import int8_path, model_inputs
from fixmatch.inference.predict import load as load_predictor
from fixmatch.inference.preprocess import prepare, read_file
from fixmatch.outputs import refuse_clobbering
from fixmatch.training.bench_options import BenchOptions


def torch_side():
    """The torch side of the API (fixmatch.workflows), imported on first use."""
    from fixmatch import workflows  # deferred: torch (`import fixmatch` and `fixmatch --help` load none)

    return workflows


def train(
    config: TrainConfig | None = None,
    *,
    config_file: str | Path | None = None,
    resume: str | Path | None = None,
    log=print,
    started=None,
    **options,
) -> dict:
    """Train (`fixmatch train`): a TrainConfig and/or its fields as keywords (keywords win; a `recipe`
    fills what neither sets). Returns the run's summary (also in RUN/summary.json; RUN is
    summary["out"]). With a baseline (baseline="supervised", or the digits demo's default) the baseline
    trains first on the same labels, and the summary holds its summary under "baseline".
    `resume=RUN` continues that run from its last checkpoint; the keywords then change only what may
    change (steps, the time budget, the speed switches...). `config_file`: a YAML file of options
    under the keywords (`fixmatch train --config`). A `time_budget` counts from `started` (a
    time.perf_counter() value; the CLI gives its process's start), else from this call."""
    if config_file is not None and resume is None:  # the file under the keywords: a recipe fills what neither sets
        options = {**load_yaml(config_file), **options}
    check_known(options)
    return torch_side().train(options, config, resume, log, started, config_file)


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
                return read_file(image, self.meta)
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


def evaluate(
    model: Model | str | Path, dataset: str | None = None, data_dir=None, fer_test: str | None = None, threads=None
) -> dict:
    """Accuracy, per-class accuracy and confusion matrix on a dataset's test split (`fixmatch
    evaluate`); a run's own dataset and data folder by default. `threads`: torch's CPU threads,
    "auto" (every CPU this process may use) or a number."""
    source = model.source if isinstance(model, Model) else str(model)
    workflows = torch_side()
    if threads is not None:
        workflows.set_threads(threads)
    return workflows.evaluate(source, dataset, data_dir, fer_test)


def export(
    checkpoint: str | Path,
    *,
    onnx=None,
    safetensors=None,
    reseal=None,
    card_json=None,
    calibrate_on=None,
) -> list[str]:
    """`fixmatch export`: the checkpoint as ONNX and/or safetensors (with the model-card figures of the
    JSON file `card_json` embedded), a checksummed copy of a checkpoint written without one
    (`reseal`), and with `calibrate_on=DATA` the ONNX export's int8 twin beside it. One line per file
    written, for the user (the twin's with the test accuracy of both)."""
    if not (onnx or safetensors or reseal):
        raise UserError("give --onnx PATH and/or --safetensors PATH (or --reseal PATH)")
    twin = int8_path(onnx) if calibrate_on and onnx else None
    refuse_clobbering(  # the card and the twin too: an output never replaces any input
        [("--onnx", onnx), ("--safetensors", safetensors), ("--reseal", reseal), ("the int8 twin", twin)],
        [*model_inputs(str(checkpoint)), ("the --card-json file", card_json)],
    )
    card = read_card(card_json) if card_json else None
    return torch_side().export(str(checkpoint), onnx, safetensors, reseal, card, calibrate_on)


def read_card(path) -> dict:
    """The model-card figures of a JSON file, to embed in an export."""
    if Path(path).exists() and not Path(path).is_file():  # a FIFO would wait for a writer forever
        raise UserError(f"--card-json {path} is not a regular file")
    try:
        card = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"--card-json {path}: file not found") from None
    except (OSError, ValueError) as e:
        raise UserError(f"--card-json {path} is not readable JSON ({e})") from None
    if not isinstance(card, dict):
        raise UserError(f"--card-json {path} must hold a JSON object")
    return card


def bench(options: BenchOptions | None = None, **overrides) -> dict:
    """`fixmatch bench`: time the real training step (or only its augmentation); BenchOptions' fields
    as keywords."""
    return torch_side().bench(dataclasses.replace(options or BenchOptions(), **overrides))


def datasets() -> list[tuple[str, str, str]]:
    """(name, description, the files it needs) of every dataset fixmatch knows."""
    return torch_side().datasets()


def cta_stats(run_dir: str | Path) -> tuple[dict, str]:
    """A CTAugment run's bin rates and probabilities (its cta.json), and the official stats() text."""
    return torch_side().cta_stats(str(run_dir))
