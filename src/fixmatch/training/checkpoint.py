"""Checkpoints written atomically: a kill at any moment leaves the previous file loadable, and
checksummed: a file damaged on disk is refused, not used.

Read with torch's weights-only unpickler: a checkpoint is tensors, numbers, strings, lists and
dicts, and a file that needs anything else (a pickled object can run code when loaded) is refused.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import torch

from fixmatch.commands import program
from fixmatch.errors import UserError
from fixmatch.outputs import write_atomic

DIGEST_KEY = "tensors_sha256"  # a checkpoint's checksum of its tensors (load_checkpoint verifies it)


def content_digest(obj) -> str:
    """sha256 of a checkpoint's tensors: each one's bytes, dtype, shape and where it sits. The zip
    container checks nothing: 64 bytes overwritten inside a tensor once loaded and predicted with
    full confidence. The metadata is left out: check_meta checks what it says."""
    h = hashlib.sha256()

    def feed(x, where: str) -> None:
        if isinstance(x, dict):
            for k in sorted(x, key=repr):
                if not (where == "" and k == DIGEST_KEY):
                    feed(x[k], f"{where}/{k!r}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                feed(v, f"{where}[{i}]")
        elif isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"{where}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)

    feed(obj, "")
    return h.hexdigest()


def save_atomic(obj, path) -> None:
    """torch.save through a temporary file, with the checksum of its content (a dict) inside: a
    full disk is a UserError that keeps the old file. Serialised in memory first: torch's zip
    writer turns a failed write into a RuntimeError."""
    obj = {**obj, DIGEST_KEY: content_digest(obj)}
    data = io.BytesIO()
    torch.save(obj, data)
    write_atomic(path, lambda f: f.write(data.getbuffer()))


CHECKPOINT_STARTS = (b"PK\x03\x04", b"\x80")  # torch.save's zip file; the legacy format's pickle


def refuse_other_files(path: Path) -> None:
    """A file that is not a checkpoint at all (an .onnx export, a README) is named as such, not
    blamed for code it would run: the unpickler's words are for pickles that hold more than data."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(CHECKPOINT_STARTS):
        what = {".onnx": "an ONNX export", ".safetensors": "a safetensors export"}.get(
            path.suffix, "another kind of file"
        )
        raise UserError(
            f"{path} is not a fixmatch checkpoint (a .pt file that `fixmatch train` writes): it is {what}"
            + (
                "; load it as a model (--model, fixmatch.load) instead"
                if path.suffix in (".onnx", ".safetensors")
                else ""
            )
        )


def load_checkpoint(path, map_location="cpu", unsealed: bool = False) -> dict:
    """A checkpoint whose tensors match the checksum written with them. `unsealed=True` (only `fixmatch
    export --reseal`) also takes one written without a checksum, for the user to seal a copy of it."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    refuse_other_files(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # the weights-only unpickler met something that is not data
        lines = [ln for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
        first = lines[0].strip() if lines else type(e).__name__
        raise UserError(
            f"refusing to load {path}: it holds more than tensors and plain data, and loading "
            f"it could run code ({first[:200]}). Only load checkpoints written by fixmatch "
            "from a source you trust"
        ) from None
    except Exception as e:  # truncated or foreign file
        raise UserError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "meta" not in ckpt:
        raise UserError(f"{path} is not a fixmatch checkpoint (no 'model' and 'meta' entries)")
    if DIGEST_KEY not in ckpt and not unsealed:
        raise UserError(
            f"{path} carries no checksum of its tensors, so damage to it could not be detected. If it "
            "is yours and you trust it, write a sealed copy: "
            f"{program('fixmatch')} export --checkpoint {path} --reseal SEALED.pt"
        )
    if DIGEST_KEY in ckpt and ckpt[DIGEST_KEY] != content_digest(ckpt):
        raise UserError(
            f"{path} is damaged: its tensors do not match the checksum written with them "
            "(the file was altered or corrupted on disk); use another checkpoint (best.pt, a copy)"
        )
    return ckpt
