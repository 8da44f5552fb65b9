"""Shared fixtures for the export/serve/browser tests: a small real FER2013 model, exported to ONNX.

The model is trained once per session (~10 s on 2 cores) on the first images of the shared
FER2013 copy; the held-out images after them are the "real faces" the API tests send.
"""

from __future__ import annotations

import io
import lzma
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shared_data import SHARED, read_npy_member

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from load_test import BOUNDARY, free_port, pipeliner, start_server  # noqa: E402, F401  (shared with the load test)
from load_test import multipart as multipart_body  # noqa: E402

FER = SHARED / "fer2013.npz.xz"
N_TRAIN, N_HELD_OUT = 700, 100


def require_fer() -> Path:
    if not FER.is_file():
        pytest.skip(f"needs the shared FER2013 copy at {FER} (../shared is absent in this checkout)")
    return FER


def read_fer_head(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n Training images (n, 48, 48) and labels: x_train and y_train lead the archive."""
    with lzma.open(require_fer()) as f:
        x = read_npy_member(f, n)
        y = read_npy_member(f, n)
    return x[..., 0], y.astype(np.int64)


@pytest.fixture(scope="session")
def fer_slice():
    x, y = read_fer_head(N_TRAIN + N_HELD_OUT)
    return {"x_train": x[:N_TRAIN], "y_train": y[:N_TRAIN], "x_test": x[N_TRAIN:], "y_test": y[N_TRAIN:]}


@pytest.fixture(scope="session")
def fer_model(tmp_path_factory, fer_slice):
    """{'run': run dir, 'checkpoint': best/last .pt, 'onnx': exported model} of a small supervised CNN."""
    from fixmatch.config import TrainConfig
    from fixmatch.data.fer2013 import CLASS_NAMES
    from fixmatch.inference.loading import load_model, write_safetensors
    from fixmatch.inference.onnx_export import export_onnx
    from fixmatch.training.train import train

    root = tmp_path_factory.mktemp("fer_model")
    np.savez(root / "fer_slice.npz", **fer_slice, class_names=np.array(CLASS_NAMES))
    train(
        TrainConfig(
            dataset="npz",
            data_dir=str(root / "fer_slice.npz"),
            num_labels=N_TRAIN,
            algorithm="supervised",
            model="cnn_small",
            steps=150,
            batch_size=16,
            lr=0.05,
            eval_every=150,
            median_of=1,
            flip=True,
            out=str(root / "run"),
            progress=False,
            threads=1,
            device="cpu",
            ema_warmup=True,
        ),
        log=lambda *a: None,
    )
    checkpoint = next(p for p in (root / "run" / n for n in ("best.pt", "last.pt")) if p.exists())
    loaded = load_model(str(checkpoint))
    loaded.meta.update(dataset="fer2013", preprocess="face")  # FER2013 faces, read from an .npz slice
    export_onnx(loaded, root / "model.onnx", {"card": {"test_accuracy": 0.5, "note": "test model"}})
    write_safetensors(loaded, root / "model.safetensors")
    return {
        "run": root / "run",
        "checkpoint": checkpoint,
        "onnx": root / "model.onnx",
        "safetensors": root / "model.safetensors",
        "loaded": loaded,
    }


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory):
    """A model that is not about faces (scikit-learn's 8x8 digits, ~2 s of training), exported to
    ONNX: {'onnx', 'class_names', 'x_test', 'y_test'}."""
    from fixmatch.config import TrainConfig
    from fixmatch.data import load_data
    from fixmatch.inference.loading import load_model
    from fixmatch.inference.onnx_export import export_onnx
    from fixmatch.training.train import train

    root = tmp_path_factory.mktemp("digits_model")
    cfg = TrainConfig(
        dataset="digits",
        num_labels=200,
        algorithm="supervised",
        model="cnn_small",
        steps=80,
        batch_size=32,
        eval_every=80,
        median_of=1,
        out=str(root / "run"),
        progress=False,
        threads=1,
        device="cpu",
    )
    train(cfg, log=lambda *a: None)
    data = load_data(cfg)
    export_onnx(load_model(str(root / "run" / "last.pt")), root / "digits.onnx")
    return {
        "onnx": root / "digits.onnx",
        "run": root / "run",
        "class_names": list(data.class_names),
        "x_test": data.x_test.numpy(),
        "y_test": data.y_test.numpy(),
    }


def face_jpeg(face: np.ndarray, side: int = 200, quality: int = 90) -> bytes:
    """A 48x48 FER face upscaled to a side x side JPEG, like a small photo of a face."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(face).resize((side, side), Image.BICUBIC).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def encode(array: np.ndarray, fmt: str = "JPEG", **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kw)
    return buf.getvalue()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares width x height pixels (the IHDR is rewritten, CRC fixed)."""
    import zlib

    data = bytearray(encode(np.zeros((8, 8), np.uint8), "PNG"))
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[12 : ihdr + 13])))
    return bytes(data)


def skimage_photo(name: str) -> Path:
    """A photo shipped inside scikit-image's wheel (no network), found without importing skimage."""
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None:
        pytest.skip("scikit-image is not installed (it is in the dev extra): no non-FER photo available")
    return Path(spec.submodule_search_locations[0]) / "data" / name


def progressive_jpeg_bomb(side: int = 6324, size: int = 1_048_000) -> bytes:
    """A ~1 MB progressive JPEG of side x side pixels whose last scan is repeated until the file is
    `size` bytes (~10,000 scans): each scan walks the whole image, minutes of CPU to decode."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (side, side), 128).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    last, end = starts[-1], data.rindex(b"\xff\xd9")
    scan = data[last:end]
    head, tail = data[:end], data[end:]
    return head + scan * ((size - len(head) - len(tail)) // len(scan)) + tail


def stop_server(proc) -> None:
    proc.send_signal(signal.SIGINT)  # gunicorn's quick shutdown (SIGTERM waits for idle connections)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def scene_with_face(face: np.ndarray, size=(900, 600), at=(560, 300), side=220) -> np.ndarray:
    """A FER face pasted far from the centre of a larger textured scene (the centre is background)."""
    from PIL import Image

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[: size[1], : size[0]]
    background = 100 + 50 * np.sin(xx / 41.0) * np.cos(yy / 29.0) + rng.normal(0, 5, (size[1], size[0]))
    canvas = np.clip(background, 0, 255).astype(np.uint8)
    canvas[at[1] : at[1] + side, at[0] : at[0] + side] = np.asarray(
        Image.fromarray(face).resize((side, side), Image.BICUBIC)
    )
    return canvas


def multipart(data: bytes, name: str = "face.jpg") -> tuple[bytes, str]:
    """A form with one field `file` holding data (the load test's), and its boundary."""
    return multipart_body(data, name), BOUNDARY
