"""Where a model comes from (a zoo name or a path) and what its file says about it, without torch:
`fixmatch serve` with an ONNX model never imports torch."""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path

from fixmatch.commands import program
from fixmatch.errors import UserError
from fixmatch.imaging.framing import MAX_INPUT_SIDE
from fixmatch.outputs import printable

ZOO_DIR = Path(__file__).resolve().parents[1] / "zoo"  # src/fixmatch/zoo, shipped as package data
ZOO = {"fer2013": "fer2013.safetensors"}  # released models, shipped inside the package
META_KEY = "fixmatch"  # the metadata entry of .onnx and .safetensors exports
REQUIRED_META = ("class_names", "image_shape", "num_classes")
WEIGHTS_DIGEST = "weights_sha256"  # in an export's metadata: the checksum of its weights
ONNX_INPUT, ONNX_PROBABILITIES, ONNX_LOGITS = "pixels", "probabilities", "logits"  # the exported graph's names
INT8_SUFFIX = ".int8.onnx"  # an export's int8 twin lies beside it: fer2013.onnx -> fer2013.int8.onnx
INT8_MAX_LOSS = 0.005  # a twin is served by default only within 0.5 points of its float model's accuracy
PRECISIONS = ("int8", "fp32")


def int8_path(onnx_path) -> Path:
    """Where the int8 twin of an exported .onnx lies: beside it, NAME.int8.onnx."""
    path = Path(onnx_path)
    return path.with_name(path.name.removesuffix(".onnx") + INT8_SUFFIX)


def int8_holds_accuracy(meta: dict) -> bool:
    """Whether an int8 twin's measured test accuracy (written by `fixmatch export --int8`) is within
    INT8_MAX_LOSS of its float model's; a twin without the measurement is never served by default."""
    measured = meta.get("test_accuracy") or {}
    try:
        return float(measured["fp32"]) - float(measured["int8"]) <= INT8_MAX_LOSS
    except (KeyError, TypeError, ValueError):
        return False


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
    if not (path.is_file() or path.is_dir()):  # reading a FIFO would wait for a writer forever
        raise UserError(f"{source} is not a regular file (a pipe, socket or device); give a model file")
    return path


def model_inputs(source: str) -> list[tuple[str, Path]]:
    """The files a model source reads, as (what, path), for refusing an output that would replace
    one: the file itself, or a run directory's last.pt. A source that does not resolve reads nothing."""
    if source in ZOO:  # every format of it that is installed (serve and predict take the best one)
        return [("the model", p) for p in sorted(ZOO_DIR.glob(Path(ZOO[source]).stem + ".*"))]
    path = Path(source)
    if path.suffix == ".onnx":  # and its int8 twin, which serve and predict may take instead
        return [("the model", path), ("the model's int8 twin", int8_path(path))]
    return [("the model", path / "last.pt" if path.is_dir() else path)]


def check_meta(meta, path) -> dict:
    """The metadata a served or predicting model needs, consistent with itself: each problem is one
    UserError naming the file (never an IndexError, a NaN in the output or a 22 GB batch later)."""
    if not isinstance(meta, dict):
        raise UserError(f"{path}: its fixmatch metadata is a {type(meta).__name__}, not a mapping")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise UserError(f"{path}: its fixmatch metadata lacks {', '.join(missing)}")
    shape, names, n = meta["image_shape"], meta["class_names"], meta["num_classes"]
    if not (isinstance(shape, list) and len(shape) == 3 and shape[0] in (1, 3) and all(is_int(v) for v in shape)):
        raise UserError(f"{path}: bad image_shape {shape!r} in its metadata (want [1 or 3, H, W])")
    if not all(1 <= v <= MAX_INPUT_SIDE for v in shape[1:]):
        raise UserError(
            f"{path}: its metadata declares {shape[1]}x{shape[2]} input images; fixmatch models take "
            f"1 to {MAX_INPUT_SIDE} pixels a side"
        )
    if not is_int(n) or n < 1:
        raise UserError(f"{path}: bad num_classes {n!r} in its metadata")
    if not isinstance(names, list) or len(names) != n:
        raise UserError(
            f"{path}: its metadata names {len(names) if isinstance(names, list) else '?'} "
            f"classes but says num_classes={n}"
        )
    if not all(isinstance(c, str) for c in names):
        raise UserError(
            f"{path}: its class names must be strings, got {[c for c in names if not isinstance(c, str)][:3]}"
        )
    # a class folder whose name is not UTF-8 gave a name with lone surrogates: no page, JSON file or
    # strict terminal can carry it, so it is shown as its bytes escaped (bad\xff)
    names = meta["class_names"] = [printable(c) for c in names]
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise UserError(f"{path}: class names repeat ({', '.join(twice)}): each class needs its own name")
    for key in ("mean", "std"):
        if key in meta:
            check_channel_values(meta, key, shape[0], path)
    return meta


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_channel_values(meta: dict, key: str, channels: int, path) -> None:
    """mean and std: one finite number per channel (or one for all), std positive: a zero std
    divides by zero and every score becomes NaN."""
    values = meta[key]
    ok = (
        isinstance(values, list)
        and len(values) in (1, channels)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    )
    if not ok or (key == "std" and min(values) <= 0):
        raise UserError(
            f"{path}: bad {key} {values!r} in its metadata (want 1 or {channels} finite numbers"
            + (", all above 0)" if key == "std" else ")")
        )


def read_onnx_meta(path) -> dict:
    """The fixmatch metadata of an exported .onnx (raises UserError for any other file), checked
    against the graph: its input takes the declared image shape, it has the outputs predict and
    serve read, and the class count matches."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
        meta = json.loads(props[META_KEY])
    except (KeyError, ValueError) as e:  # no/odd metadata: an ONNX file from elsewhere
        raise UserError(f"{Path(path)} is not a fixmatch ONNX export (no valid {META_KEY!r} metadata: {e})") from None
    except Exception as e:  # protobuf's DecodeError has no stable import path
        raise UserError(f"{Path(path)} is not a readable ONNX file ({type(e).__name__})") from None
    check_meta(meta, path)
    refuse_unsealed(meta, path)
    if onnx_graph_digest(model.graph) != meta[WEIGHTS_DIGEST]:
        raise UserError(f"{path} is damaged: its graph does not match the checksum written with it")
    check_onnx_graph(model.graph, meta, path)
    refuse_nonfinite(onnx_nonfinite_tensors(model.graph), path)
    return meta


def refuse_unsealed(meta: dict, path) -> None:
    """An export without the checksum of its weights could be altered without anyone noticing:
    refused, like a checkpoint without one (the export can be written again from its checkpoint)."""
    if WEIGHTS_DIGEST not in meta:
        raise UserError(
            f"{path} carries no checksum of its weights, so damage to it could not be detected; export it "
            f"again from its checkpoint: {program('fixmatch')} export --checkpoint RUN --onnx PATH (or --safetensors)"
        )


def refuse_nonfinite(names: list[str], path) -> None:
    """Weights that are NaN or infinite make every score NaN, which JSON cannot even carry."""
    if names:
        raise UserError(f"{path}: its weights are not finite numbers (NaN or infinity in {', '.join(names[:3])})")


def onnx_nonfinite_tensors(graph) -> list[str]:
    """The graph's float initializers and constants that hold a NaN or an infinity."""
    import numpy as np
    from onnx import numpy_helper

    tensors = list(graph.initializer)
    for node in graph.node:
        tensors += [a.t for a in node.attribute if a.HasField("t")]
    found = []
    for t in tensors:
        if t.data_location == t.EXTERNAL:  # not in the file: onnxruntime refuses to load it anyway
            continue
        a = numpy_helper.to_array(t)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            found.append(t.name or "a constant")
    return found


def static_dims(value_info) -> list:
    """A graph input's or output's dimensions: ints where fixed, None where dynamic (the batch)."""
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def check_onnx_graph(graph, meta: dict, path) -> None:
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    names = [i.name for i in inputs]
    if names != [ONNX_INPUT]:
        raise UserError(f"{path}: the graph takes {names}, not one {ONNX_INPUT!r} input: not a fixmatch export")
    want = [None, *meta["image_shape"]]
    if static_dims(inputs[0]) != want:
        raise UserError(
            f"{path}: its graph takes {static_dims(inputs[0])} but its metadata says image_shape "
            f"{meta['image_shape']} (the file was altered)"
        )
    outputs = {o.name: o for o in graph.output}
    if ONNX_PROBABILITIES not in outputs:
        raise UserError(f"{path}: the graph has no {ONNX_PROBABILITIES!r} output (outputs: {sorted(outputs)})")
    if static_dims(outputs[ONNX_PROBABILITIES]) != [None, meta["num_classes"]]:
        raise UserError(
            f"{path}: its graph outputs {static_dims(outputs[ONNX_PROBABILITIES])} scores but its metadata "
            f"names {meta['num_classes']} classes"
        )


# safetensors: 8 bytes of header length, the JSON header, then the tensors' bytes
SAFETENSORS_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


def read_safetensors_meta(path) -> dict:
    """The fixmatch metadata of an exported .safetensors, from its JSON header, and the header
    checked against the file: every tensor's bytes lie inside it (a truncated file is refused here,
    not in a worker that dies loading it)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > min(100_000_000, size - 8):
                raise ValueError(f"the header claims {length} bytes, the file has {size}")
            header = json.loads(f.read(length))
        meta = json.loads(header["__metadata__"][META_KEY])
    except (KeyError, ValueError, TypeError, struct.error, OSError) as e:
        raise UserError(f"{path} is not a fixmatch .safetensors export ({type(e).__name__}: {e})") from None
    check_meta(meta, path)
    problem = safetensors_layout_problem(header, size - 8 - length)
    if problem:
        raise UserError(f"{path} is damaged or truncated: {problem}")
    with open(path, "rb") as f:
        data = safetensors_data(f.read())
    refuse_unsealed(meta, path)
    if hashlib.sha256(data).hexdigest() != meta[WEIGHTS_DIGEST]:
        raise UserError(f"{path} is damaged: its weights do not match the checksum written with them")
    refuse_nonfinite(safetensors_nonfinite_tensors(header, data), path)
    return meta


# A float is NaN or infinite exactly when its exponent bits are all ones: one test for every width.
FLOAT_EXPONENT = {"F16": ("<u2", 0x7C00), "BF16": ("<u2", 0x7F80), "F32": ("<u4", 0x7F800000),
                  "F64": ("<u8", 0x7FF0000000000000)}  # fmt: skip


def safetensors_nonfinite_tensors(header: dict, data) -> list[str]:
    import numpy as np

    found = []
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] not in FLOAT_EXPONENT:
            continue
        kind, mask = FLOAT_EXPONENT[t["dtype"]]
        begin, end = t["data_offsets"]
        bits = np.frombuffer(data[begin:end], dtype=kind)
        if ((bits & mask) == mask).any():
            found.append(name)
    return found


def safetensors_data(file_bytes: bytes) -> memoryview:
    """The tensors' bytes of a .safetensors file: everything after the length and the header."""
    (length,) = struct.unpack("<Q", file_bytes[:8])
    return memoryview(file_bytes)[8 + length :]


def onnx_graph_digest(graph) -> str:
    """sha256 of an ONNX graph as serialised (nodes and weights; the model's metadata is outside it)."""
    return hashlib.sha256(graph.SerializeToString()).hexdigest()


def safetensors_layout_problem(header: dict, data_bytes: int) -> str | None:
    """What is wrong with the tensors' layout (None: each one's bytes fit, and together they fill the
    data section exactly, as safetensors itself requires)."""
    spans = []
    for name, t in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = t["data_offsets"]
            count = math.prod(t["shape"])
            need = count * SAFETENSORS_ITEMSIZE[t["dtype"]]
        except (KeyError, TypeError, ValueError):
            return f"tensor {name!r} has a malformed entry"
        if not (is_int(begin) and is_int(end) and 0 <= begin <= end) or end - begin != need:
            return f"tensor {name!r} claims bytes {begin}..{end} for {need} bytes of data"
        spans.append((begin, end))
    spans.sort()
    covered = 0
    for begin, end in spans:
        if begin != covered:
            return "its tensors overlap or leave gaps"
        covered = end
    if covered != data_bytes:
        return f"its tensors need {covered} bytes of data and the file holds {data_bytes}"
    return None
