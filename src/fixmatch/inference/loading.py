"""Load a trained model for inference, from a training checkpoint, an exported .safetensors file or
a name in the model zoo, and run it on images. Used by evaluate, predict, export and serve."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from fixmatch.errors import UserError
from fixmatch.inference.model_files import (  # noqa: F401 (ZOO, ZOO_DIR, resolve_source re-exported)
    META_KEY,
    WEIGHTS_DIGEST,
    ZOO,
    ZOO_DIR,
    check_meta,
    read_safetensors_meta,
    resolve_source,
    safetensors_data,
)
from fixmatch.inference.preprocess import framing
from fixmatch.models import build_model
from fixmatch.models.input_scaling import Normalizer
from fixmatch.models.layers import LEGACY_WIRING
from fixmatch.outputs import write_atomic
from fixmatch.training.checkpoint import load_checkpoint

META_KEYS = (
    "dataset",
    "class_names",
    "image_shape",
    "mean",
    "std",
    "model_name",
    "num_classes",
    "arch_variant",
    "preprocess",
)


@dataclass
class LoadedModel:
    model: nn.Module  # eval mode
    normalize: Normalizer
    meta: dict  # class_names, image_shape [C, H, W], mean, std, model_name, num_classes, (card)

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) at the model's input size -> (N, num_classes) softmax."""
        return self.model(self.normalize(images)).float().softmax(dim=1)


def load_model(source: str, device: str | torch.device = "cpu") -> LoadedModel:
    """A model ready for inference; a file whose metadata and weights disagree is one UserError."""
    path = resolve_source(source)
    try:
        return build_loaded(path, device)
    except (KeyError, RuntimeError, TypeError, ValueError, IndexError) as e:
        what = f"no {e} entry" if isinstance(e, KeyError) else str(e).strip().splitlines()[0][:300]
        raise UserError(f"cannot use {path} as a model: its metadata does not match its weights ({what})") from None


def build_loaded(path: Path, device) -> LoadedModel:
    if path.suffix == ".safetensors":
        state, meta = read_safetensors(path)
    else:
        ckpt = load_checkpoint(path)
        check_meta(ckpt["meta"], path)
        state, meta = ckpt["ema"], {k: ckpt["meta"][k] for k in META_KEYS if k in ckpt["meta"]}
        meta["source_run"] = ckpt["meta"].get("run_name")
    # Files written before the wiring was made official carry no "arch_variant": they are fixmatch 0.1's.
    wiring = meta.get("arch_variant", LEGACY_WIRING)
    model = build_model(meta["model_name"], meta["num_classes"], meta["image_shape"][0], wiring=wiring)
    model.load_state_dict(state)
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:  # a run that diverged: every score would be NaN
        raise UserError(f"{path}: its weights are not finite numbers (NaN or infinity in {', '.join(broken[:3])})")
    model.to(device).eval()
    return LoadedModel(model, Normalizer(meta["mean"], meta["std"]).to(device), meta)


def write_safetensors(loaded: LoadedModel, path, extra_meta: dict | None = None) -> None:
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in loaded.model.state_dict().items()}
    meta = {**loaded.meta, "preprocess": framing(loaded.meta), **(extra_meta or {})}  # the framing travels
    # The tensors' bytes do not depend on the metadata: their checksum goes into it (the file format
    # has none; read_safetensors_meta verifies it).
    bare = save(state, metadata={META_KEY: json.dumps(meta)})
    meta[WEIGHTS_DIGEST] = hashlib.sha256(safetensors_data(bare)).hexdigest()
    data = save(state, metadata={META_KEY: json.dumps(meta)})
    write_atomic(path, lambda f: f.write(data))


def read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors.torch import load

    meta = read_safetensors_meta(path)  # the metadata and the tensors' layout, checked
    try:  # from the bytes: safetensors opens only paths that are valid UTF-8, a file name need not be
        return load(Path(path).read_bytes()), meta
    except Exception as e:  # safetensors' own SafetensorError has no stable import path
        raise UserError(f"{path} is not a readable .safetensors file ({str(e)[:200]})") from None
