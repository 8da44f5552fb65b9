"""Export a trained model to one self-contained ONNX file: pixels in, probabilities out.

The graph takes float32 pixels 0..255, NCHW at the model's input size, with a dynamic batch axis,
and does the training normalisation itself, so a server needs nothing but pixels. The model's
metadata (class names, input shape, mean/std, model card) travels in the file's metadata_props
under the key "fixmatch", the same JSON the .safetensors export stores.
"""

from __future__ import annotations

import io
import json
import warnings

import torch
import torch.nn as nn

from fixmatch.inference.model_files import (  # noqa: F401 (read_onnx_meta re-exported)
    META_KEY,
    ONNX_INPUT,
    ONNX_LOGITS,
    ONNX_PROBABILITIES,
    WEIGHTS_DIGEST,
    onnx_graph_digest,
    read_onnx_meta,
)
from fixmatch.inference.preprocess import framing
from fixmatch.outputs import write_atomic

INPUT, OUTPUTS = ONNX_INPUT, (ONNX_PROBABILITIES, ONNX_LOGITS)
OPSET = 17


class PixelsToProbabilities(nn.Module):
    """normalise -> network -> (softmax, logits), the whole inference path in one module."""

    def __init__(self, loaded):
        super().__init__()
        self.normalize, self.model = loaded.normalize, loaded.model

    def forward(self, pixels: torch.Tensor):
        logits = self.model(self.normalize(pixels)).float()
        return logits.softmax(dim=1), logits


def export_onnx(loaded, path, extra_meta: dict | None = None) -> None:
    import onnx

    c, h, w = loaded.meta["image_shape"]
    module = PixelsToProbabilities(loaded).cpu().eval()
    example = torch.full((2, c, h, w), 128.0)
    # built in memory (the destination is written once, whole, by write_atomic): a temporary folder
    # would fail on a full TMPDIR outside the write's error handling
    graph = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter works offline with no extra package; its deprecation notice is noise
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            graph,  # type: ignore[arg-type]  # the TorchScript exporter takes a file object too
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_axes={name: {0: "batch"} for name in (INPUT, *OUTPUTS)},
        )
    model = onnx.load_from_string(graph.getvalue())
    meta = {
        **loaded.meta,
        "preprocess": framing(loaded.meta),
        **(extra_meta or {}),
        "input": {"name": INPUT, "dtype": "float32", "range": [0, 255], "layout": "NCHW", "normalized_inside": True},
        WEIGHTS_DIGEST: onnx_graph_digest(model.graph),  # read_onnx_meta verifies it
    }
    onnx.helper.set_model_props(model, {META_KEY: json.dumps(meta)})
    model.doc_string = f"fixmatch {meta.get('model_name')} on {meta.get('dataset')}: pixels 0..255 -> probabilities"
    onnx.checker.check_model(model)
    write_atomic(path, lambda f: f.write(model.SerializeToString()))
