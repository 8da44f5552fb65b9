"""The served model: one object per worker process, exported .onnx (onnxruntime) or .pt/.safetensors (torch).

Both backends take uint8 pixels (N, C, H, W) at the model's input size and return softmax
probabilities as numpy, so the web app does not care which one it holds. The ONNX path never
imports torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fixmatch.commands import program
from fixmatch.errors import UserError
from fixmatch.inference import model_files

SUFFIXES = (".onnx", ".safetensors")  # zoo files, best first: onnx needs no torch at inference


def resolve_model(source: str, suffixes=SUFFIXES, precision: str = "int8") -> Path:
    """A zoo name (its .onnx, else its .safetensors) or a path; a clear error when neither exists.
    An .onnx with an int8 twin beside it (model_files.int8_path) that held its accuracy is served
    as the twin unless precision is "fp32"."""
    if precision not in model_files.PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(model_files.PRECISIONS)} (got {precision!r})")
    path = find_model(source, suffixes)
    twin = model_files.int8_path(path)
    if precision == "int8" and path.suffix == ".onnx" and twin != path and twin.is_file():
        if model_files.int8_holds_accuracy(model_files.read_onnx_meta(twin)):
            return twin
    return path


def find_model(source: str, suffixes=SUFFIXES) -> Path:
    if source not in model_files.ZOO:
        return model_files.resolve_source(source)
    stem = Path(model_files.ZOO[source]).stem
    for path in (model_files.ZOO_DIR / (stem + s) for s in suffixes):
        if path.is_file():
            return path
    raise UserError(
        f"the {source} model is not installed: expected {model_files.ZOO_DIR / (stem + '.onnx')}. "
        f"Train and export one ({program('fixmatch')} export --checkpoint RUN --onnx {stem}.onnx) and pass --model PATH"
    )


def check_model(source: str, precision: str = "int8") -> dict:
    """Everything a worker would find wrong with the model, found once, up front (the server's
    parent process runs this before forking workers): -> the model's metadata. Exported files are
    checked from their metadata (no onnxruntime session before the fork); checkpoints are loaded."""
    path = resolve_model(source, precision=precision)
    if path.suffix == ".onnx":
        return model_files.read_onnx_meta(path)
    if path.suffix == ".safetensors":
        return model_files.read_safetensors_meta(path)
    from fixmatch.inference.loading import load_model  # deferred: torch; ONNX models never load it

    return load_model(str(path)).meta


class OnnxPredictor:
    def __init__(self, path: Path):
        import onnxruntime as ort

        self.meta = model_files.read_onnx_meta(path)
        opts = ort.SessionOptions()
        # one thread each: gunicorn runs one process per core, more threads would only fight
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        try:
            # from the bytes: onnxruntime opens only paths that are valid UTF-8, a file name need not be
            self.session = ort.InferenceSession(Path(path).read_bytes(), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's errors have no stable import path
            raise UserError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0][:300]}") from None
        self.input = self.session.get_inputs()[0].name

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run([model_files.ONNX_PROBABILITIES], {self.input: pixels.astype(np.float32)})[0]


class TorchPredictor:
    def __init__(self, path: Path):
        import torch

        from fixmatch.inference.loading import load_model  # deferred: torch, only for a torch model

        torch.set_num_threads(1)
        self.loaded = load_model(str(path))
        self.meta = self.loaded.meta

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        return self.loaded.probabilities(torch.from_numpy(np.ascontiguousarray(pixels))).numpy()


def load_predictor(source: str, suffixes=SUFFIXES, precision: str = "int8"):
    path = resolve_model(source, suffixes, precision)
    predictor: OnnxPredictor | TorchPredictor = (OnnxPredictor if path.suffix == ".onnx" else TorchPredictor)(path)
    predictor.path = path  # type: ignore[union-attr]  # both classes take it here, for the page's footer
    return predictor
