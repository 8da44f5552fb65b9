"""Where a model comes from (a zoo name or a path) and what its file says about it, without torch:
`fixmatch serve` with an ONNX model never imports torch."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from fixmatch.errors import UserError

ZOO_DIR = Path(__file__).parent / "zoo"
ZOO = {"fer2013": "fer2013.safetensors"}  # released models, shipped inside the package
META_KEY = "fixmatch"  # the metadata entry of .onnx and .safetensors exports
REQUIRED_META = ("class_names", "image_shape", "num_classes")


def resolve_source(source: str) -> Path:
    if source in ZOO:
        path = ZOO_DIR / ZOO[source]
        if not path.exists():
            raise UserError(f"the zoo model {source!r} is not installed (expected {path})")
        return path
    path = Path(source)
    if not path.exists():
        raise UserError(
            f"model not found: {source} (give a checkpoint .pt, a run directory, "
            f"an exported .safetensors or .onnx, or a zoo name: {', '.join(ZOO)})"
        )
    return path


def model_inputs(source: str) -> list[tuple[str, Path]]:
    """The files a model source reads, as (what, path), for refusing an output that would replace
    one: the file itself, or a run directory's last.pt. A source that does not resolve reads nothing."""
    try:
        path = Path(source) if source not in ZOO else resolve_source(source)
    except UserError:
        return []
    return [("the model", path / "last.pt" if path.is_dir() else path)]


def check_meta(meta, path) -> dict:
    """The metadata a served or predicting model needs, consistent with itself."""
    missing = [k for k in REQUIRED_META if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise UserError(f"{path}: its fixmatch metadata lacks {', '.join(missing)}")
    shape, names = meta["image_shape"], meta["class_names"]
    if not (
        isinstance(shape, list)
        and len(shape) == 3
        and shape[0] in (1, 3)
        and all(isinstance(v, int) and v > 0 for v in shape)
    ):
        raise UserError(f"{path}: bad image_shape {shape!r} in its metadata (want [1 or 3, H, W])")
    if not isinstance(names, list) or len(names) != meta["num_classes"]:
        raise UserError(
            f"{path}: its metadata names {len(names) if isinstance(names, list) else '?'} "
            f"classes but says num_classes={meta['num_classes']}"
        )
    return meta


def read_onnx_meta(path) -> dict:
    """The fixmatch metadata of an exported .onnx (raises UserError for any other file)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
        meta = json.loads(props[META_KEY])
    except (KeyError, ValueError) as e:  # no/odd metadata: an ONNX file from elsewhere
        raise UserError(f"{Path(path)} is not a fixmatch ONNX export (no valid {META_KEY!r} metadata: {e})") from None
    except Exception as e:  # protobuf's DecodeError has no stable import path
        raise UserError(f"{Path(path)} is not a readable ONNX file ({type(e).__name__})") from None
    return check_meta(meta, path)


def read_safetensors_meta(path) -> dict:
    """The fixmatch metadata of an exported .safetensors, from its JSON header alone."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(f.read(length))
        meta = json.loads(header["__metadata__"][META_KEY])
    except (KeyError, ValueError, TypeError, struct.error, OSError) as e:
        raise UserError(f"{path} is not a fixmatch .safetensors export ({type(e).__name__}: {e})") from None
    return check_meta(meta, path)
