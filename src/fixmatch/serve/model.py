"""The served model: one object per worker process, exported .onnx (onnxruntime) or .pt/.safetensors (torch).

Both backends take uint8 pixels (N, C, H, W) at the model's input size and return softmax
probabilities as numpy, so the web app does not care which one it holds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fixmatch.errors import UserError

SUFFIXES = (".onnx", ".safetensors")  # zoo files, best first: onnx needs no torch at inference


def resolve_model(source: str) -> Path:
    """A zoo name (its .onnx, else its .safetensors) or a path; a clear error when neither exists."""
    from fixmatch.inference import ZOO, ZOO_DIR, resolve_source

    if source not in ZOO:
        return resolve_source(source)
    stem = Path(ZOO[source]).stem
    for path in (ZOO_DIR / (stem + s) for s in SUFFIXES):
        if path.is_file():
            return path
    raise UserError(f"the {source} model is not installed: expected {ZOO_DIR / (stem + '.onnx')}. Train and "
                    f"export one (fixmatch export --checkpoint RUN --onnx {stem}.onnx) and pass --model PATH")


class OnnxPredictor:
    def __init__(self, path: Path):
        import onnxruntime as ort

        from fixmatch.onnx_export import read_onnx_meta

        self.meta = read_onnx_meta(path)
        opts = ort.SessionOptions()
        # one thread each: gunicorn runs one process per core, more threads would only fight
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run(["probabilities"], {self.input: pixels.astype(np.float32)})[0]


class TorchPredictor:
    def __init__(self, path: Path):
        import torch

        from fixmatch.inference import load_model

        torch.set_num_threads(1)
        self.loaded = load_model(str(path))
        self.meta = self.loaded.meta

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        return self.loaded.probabilities(torch.from_numpy(np.ascontiguousarray(pixels))).numpy()


def load_predictor(source: str):
    path = resolve_model(source)
    predictor = (OnnxPredictor if path.suffix == ".onnx" else TorchPredictor)(path)
    predictor.path = path
    return predictor
