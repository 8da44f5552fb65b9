"""`fixmatch predict`: label images from files and folders with the same preprocessing as the web
page (preprocess.py), on what the page would upload (page_upload.py: a file over the server's limit
is shrunk as the page shrinks it), as JSON or CSV; an unreadable file is a row with an error."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fixmatch.cpus import thread_count
from fixmatch.errors import UserError
from fixmatch.imaging.decoding import failure_reason
from fixmatch.inference import predictor as model
from fixmatch.inference.model_files import model_inputs
from fixmatch.inference.page_upload import page_copy
from fixmatch.inference.preprocess import framing, read_file
from fixmatch.outputs import printable, refuse_clobbering, write_text_atomic

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
BATCH = 64


def collect(paths: list[str]) -> list[Path]:
    """Files as given, folders searched recursively for images (sorted); missing paths kept, so
    they become error rows."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(p)
    return found


def load(source: str, precision: str = "int8"):
    """The model as the server loads it (ONNX first for a zoo name, when onnxruntime is installed;
    its int8 twin unless precision is "fp32")."""
    has_ort = importlib.util.find_spec("onnxruntime") is not None
    return model.load_predictor(source, model.SUFFIXES if has_ort else (".safetensors",), precision)


def prepare_file(path: Path, meta: dict) -> dict:
    if framing(meta) == "face" and importlib.util.find_spec("cv2") is None:
        raise UserError("this model frames faces with OpenCV: pip install 'fixmatch[serve]'")
    if path.exists() and not (path.is_file() or path.is_dir()):  # opening a FIFO would wait for a writer
        return {"error": "not a regular file (a pipe, socket or device)"}
    try:
        prepared = read_file(path, meta)  # within the decoding policy, like every decode
        sent = page_copy(path)  # a file over the upload limit: the copy the page would send instead
        return prepared if sent is None else read_file(sent, meta)
    except FileNotFoundError:
        return {"error": "file not found"}
    except IsADirectoryError:
        return {"error": "a folder with no images"}
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        return {"error": failure_reason(path, e)[:300]}  # the words train's skipped.txt uses


def predict_paths(predictor, paths: list[Path]) -> list[dict]:
    meta, names = predictor.meta, predictor.meta["class_names"]
    rows = [{"path": str(p), **prepare_file(p, meta)} for p in paths]
    ok = [r for r in rows if "error" not in r]
    for i in range(0, len(ok), BATCH):
        chunk = ok[i : i + BATCH]
        probs = predictor.probabilities(np.stack([r.pop("pixels") for r in chunk]))
        for row, p in zip(chunk, probs):
            top = int(np.argmax(p))
            row.update(
                label=names[top],
                confidence=round(float(p[top]), 5),
                probabilities={c: round(float(v), 5) for c, v in zip(names, p)},
            )
    return [order(r) for r in rows]


def order(row: dict) -> dict:
    keys = ("path", "label", "confidence", "probabilities", "framing", "face_found", "box", "image_size", "error")
    return {k: row[k] for k in keys if k in row}


def write_csv(rows: list[dict], class_names: list[str], out) -> None:
    writer = csv.writer(out)
    writer.writerow(["path", "label", "confidence", "face_found", "error", *class_names])
    for r in rows:
        probs = r.get("probabilities", {})
        face = r.get("face_found")
        writer.writerow(
            [
                r["path"],
                r.get("label", ""),
                r.get("confidence", ""),
                "" if face is None else str(face).lower(),
                r.get("error", ""),
                *(probs.get(c, "") for c in class_names),
            ]
        )


def run(
    images: list[str],
    source: str,
    csv: str | None = None,
    threads: int | str = "auto",
    precision: str = "int8",
    face_detector: str = "auto",
) -> int:
    """`fixmatch predict`: label the image files and folders in `images` with the model at `source`;
    JSON on stdout, or a CSV file. `threads`: torch's CPU threads, `auto` or a number; `precision`
    and `face_detector` as `fixmatch serve` takes them."""
    threads = thread_count(threads)  # a bad value is an error before any work
    paths = collect(images)
    if not paths:
        raise UserError(f"no images found in {', '.join(images)} ({', '.join(sorted(IMAGE_SUFFIXES))})")
    refuse_clobbering([("--csv", csv)], [*model_inputs(source), *(("an input image", p) for p in paths)])
    predictor = load(source, precision)
    if framing(predictor.meta) == "face":
        from fixmatch.inference.face import use_detector  # deferred: OpenCV, only for a model that frames faces

        use_detector(face_detector)
    if hasattr(predictor, "loaded"):  # the torch backend (an ONNX model runs without torch)
        import torch

        torch.set_num_threads(threads)
    rows = predict_paths(predictor, paths)
    if csv:
        text = io.StringIO()
        write_csv(rows, predictor.meta["class_names"], text)
        write_text_atomic(csv, text.getvalue())
    else:
        single = len(rows) == 1 and not Path(images[0]).is_dir()
        print(json.dumps(rows[0] if single else rows))
    errors = sum("error" in r for r in rows)
    if csv:
        print(f"wrote {len(rows)} rows to {printable(csv)} ({errors} unreadable)", file=sys.stderr)
    if errors == len(rows):
        raise UserError(
            f"none of the {len(rows)} images could be read" + (f": {rows[0]['error']}" if len(rows) == 1 else "")
        )
    return 0
