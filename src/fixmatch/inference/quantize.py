"""An exported ONNX model's int8 twin: static quantisation, per channel, in QDQ form, with
onnxruntime.quantization, calibrated on images of the model's *training* split only (never the test
split the accuracy is then measured on), and the accuracy of both on the test split.

The twin takes and gives what the float model does (uint8 pixels as float32 in, probabilities out)
and carries the same metadata, plus its precision, its calibration and both accuracies.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from fixmatch.errors import UserError
from fixmatch.inference.evaluate import matching_data, split_report
from fixmatch.inference.model_files import (
    INT8_MAX_LOSS,
    META_KEY,
    WEIGHTS_DIGEST,
    int8_holds_accuracy,
    int8_path,
    onnx_graph_digest,
    read_onnx_meta,
)
from fixmatch.inference.predictor import OnnxPredictor
from fixmatch.outputs import printable, write_atomic

CALIBRATION_IMAGES = 1000  # min/max calibration: ranges, not fitted weights; 1,000 faces cover them
CALIBRATION_SEED = 0
CALIBRATION_BATCH = 50


def calibration_sample(x_train, n: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """n training images drawn without replacement (all when fewer), in their order -> float32 NCHW 0..255."""
    x = np.asarray(x_train)
    picked = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
    return x[picked].astype(np.float32)


class Batches:
    """onnxruntime's CalibrationDataReader protocol: get_next() -> {input: batch} until None."""

    def __init__(self, images: np.ndarray, input_name: str):
        self.batches = iter(
            [{input_name: images[i : i + CALIBRATION_BATCH]} for i in range(0, len(images), CALIBRATION_BATCH)]
        )

    def get_next(self):
        return next(self.batches, None)

    def rewind(self):  # never needed by min/max calibration, part of the protocol
        raise NotImplementedError


def quantize_onnx(fp32_path, out_path, calibration: np.ndarray, extra_meta: dict | None = None) -> dict:
    """Write the int8 twin of the fixmatch export at fp32_path to out_path (whole, atomically) ->
    its metadata."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    meta = read_onnx_meta(fp32_path)
    input_name = "pixels"
    with tempfile.TemporaryDirectory() as scratch, quiet_quantizer():
        prepared, quantized = Path(scratch) / "prepared.onnx", Path(scratch) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)  # shapes + graph folding
        quantize_static(
            str(prepared),
            str(quantized),
            Batches(calibration, input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        model = onnx.load(str(quantized))
    meta = {
        **meta,
        "precision": "int8",
        "quantization": {
            "method": "onnxruntime static QDQ, per-channel int8 weights, uint8 activations, min/max calibration",
            "calibration_images": len(calibration),
            "calibration_split": "train",
        },
        **(extra_meta or {}),
        WEIGHTS_DIGEST: onnx_graph_digest(model.graph),
    }
    write_onnx_with_meta(model, meta, out_path)
    return meta


def write_onnx_with_meta(model, meta: dict, path) -> None:
    import onnx

    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {META_KEY: json.dumps(meta)})
    onnx.checker.check_model(model)
    write_atomic(path, lambda f: f.write(model.SerializeToString()))


def export_int8(fp32_path, out_path, data, split: str) -> dict:
    """The int8 twin of the export at fp32_path, calibrated on data.x_train and measured beside the
    float model on data.x_test -> {"fp32": report, "int8": report, "agreement": fraction of equal
    labels}; the twin (written to out_path) records both accuracies in its metadata."""
    import onnx
    import torch

    calibration = calibration_sample(data.x_train)
    with tempfile.TemporaryDirectory() as scratch:
        quantized = Path(scratch) / "int8.onnx"
        meta = quantize_onnx(fp32_path, quantized, calibration)
        probs = {"fp32": onnx_probabilities(fp32_path, data.x_test), "int8": onnx_probabilities(quantized, data.x_test)}
        dataset = meta.get("dataset") or ""
        reports = {name: split_report(torch.from_numpy(p), data, dataset, split) for name, p in probs.items()}
        meta["test_accuracy"] = {
            "fp32": reports["fp32"]["accuracy"],
            "int8": reports["int8"]["accuracy"],
            "split": reports["fp32"]["test_split"],
            "images": reports["fp32"]["num_test"],
        }
        if isinstance(meta.get("card"), dict):  # the page shows the card's accuracies: this file's own beside them
            meta["card"] = {**meta["card"], "int8_accuracy": round(reports["int8"]["accuracy"], 4)}
        write_onnx_with_meta(onnx.load(str(quantized)), meta, out_path)
    agreement = float((probs["fp32"].argmax(1) == probs["int8"].argmax(1)).mean())
    return {**reports, "agreement": agreement, "meta": meta}


class quiet_quantizer:
    """onnxruntime's quantizer logs a warning per 1-D weight it keeps per-tensor (batch norm scales):
    noise for a user, so its root-logger warnings are held back while it runs."""

    def __enter__(self):
        self.level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)

    def __exit__(self, *exc):
        logging.getLogger().setLevel(self.level)


def onnx_probabilities(path, images, batch: int = 256) -> np.ndarray:
    """An exported model's probabilities for uint8 images (N, C, H, W), as the server computes them."""
    predictor = OnnxPredictor(Path(path))
    x = np.asarray(images)
    return np.concatenate([predictor.probabilities(x[i : i + batch]) for i in range(0, len(x), batch)])


def run_export_int8(loaded, onnx_path, data_dir, run_config: dict) -> str:
    """`fixmatch export --int8`: the twin of the just-written export, calibrated and measured on
    the model's own dataset as its run read it -> the table printed for the user."""
    dataset = run_config.get("dataset") or loaded.meta.get("dataset")
    if not dataset:
        raise UserError("--int8: this model file does not say which dataset it was trained on; none can calibrate it")
    fer_test = run_config.get("fer_test") or "private"
    data = matching_data(loaded.meta, dataset, data_dir, fer_test, run_config)
    twin = int8_path(onnx_path)
    result = export_int8(onnx_path, twin, data, fer_test)
    return int8_table(result, twin)


def int8_table(result: dict, twin) -> str:
    fp32, int8 = result["fp32"], result["int8"]
    names = fp32["class_names"]
    width = max(8, *(len(n) for n in names))
    counts = [sum(row) for row in fp32["confusion_matrix"]]
    lines = [
        f"wrote {printable(twin)} (int8, calibrated on "
        f"{result['meta']['quantization']['calibration_images']:,} training images)",
        f"{fp32['dataset']} ({fp32['test_split']}): {fp32['num_test']:,} images, "
        f"{100 * result['agreement']:.1f}% of labels unchanged",
        "",
        f"{'class':<{width}} {'images':>7} {'fp32':>7} {'int8':>7}",
        f"{'all':<{width}} {fp32['num_test']:>7,} {100 * fp32['accuracy']:>6.2f}% {100 * int8['accuracy']:>6.2f}%",
    ]
    for name, n, a, b in zip(names, counts, fp32["per_class_accuracy"], int8["per_class_accuracy"]):
        lines.append(f"{name:<{width}} {n:>7,} {100 * a:>6.1f}% {100 * b:>6.1f}%")
    served = int8_holds_accuracy(result["meta"])
    lines += [
        "",
        f"int8 is within {100 * INT8_MAX_LOSS:g} points: serve and predict take it (--precision fp32: the float model)"
        if served
        else f"int8 lost more than {100 * INT8_MAX_LOSS:g} points: serve and predict keep the float model",
    ]
    return "\n".join(lines)
