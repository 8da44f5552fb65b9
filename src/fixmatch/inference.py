"""Load a trained model for inference, from a training checkpoint, an exported .safetensors file or
a name in the model zoo, and run it on images. Used by evaluate, predict, export and serve."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from fixmatch.checkpoint import load_checkpoint
from fixmatch.errors import UserError
from fixmatch.evaluate import Normalizer
from fixmatch.models import build_model
from fixmatch.models.layers import LEGACY_WIRING

ZOO_DIR = Path(__file__).parent / "zoo"
ZOO = {"fer2013": "fer2013.safetensors"}  # released models, shipped inside the package
META_KEYS = ("dataset", "class_names", "image_shape", "mean", "std", "model_name", "num_classes", "arch_variant")


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


def resolve_source(source: str) -> Path:
    if source in ZOO:
        path = ZOO_DIR / ZOO[source]
        if not path.exists():
            raise UserError(f"the zoo model {source!r} is not installed (expected {path})")
        return path
    path = Path(source)
    if not path.exists():
        raise UserError(f"model not found: {source} (give a checkpoint .pt, a run directory, "
                        f"an exported .safetensors, or a zoo name: {', '.join(ZOO)})")
    return path


def load_model(source: str, device: str | torch.device = "cpu") -> LoadedModel:
    path = resolve_source(source)
    if path.suffix == ".safetensors":
        state, meta = read_safetensors(path)
    else:
        ckpt = load_checkpoint(path)
        state, meta = ckpt["ema"], {k: ckpt["meta"][k] for k in META_KEYS if k in ckpt["meta"]}
        meta["source_run"] = ckpt["meta"].get("run_name")
    # Files written before the wiring was made official carry no "arch_variant": they are fixmatch 0.1's.
    wiring = meta.get("arch_variant", LEGACY_WIRING)
    model = build_model(meta["model_name"], meta["num_classes"], meta["image_shape"][0], wiring=wiring)
    model.load_state_dict(state)
    model.to(device).eval()
    return LoadedModel(model, Normalizer(meta["mean"], meta["std"]).to(device), meta)


def evaluate_on_dataset(loaded: LoadedModel, dataset: str, data_dir=None, fer_test: str = "private",
                        batch_size: int = 512) -> dict:
    """Accuracy, per-class accuracy and confusion matrix of `loaded` on a dataset's test split."""
    from fixmatch.config import from_dict
    from fixmatch.evaluate import classification_report, predict_logits
    from fixmatch.train import load_data

    data = load_data(from_dict({"dataset": dataset, "data_dir": data_dir, "fer_test": fer_test}))
    if list(data.image_shape) != list(loaded.meta["image_shape"]) or data.num_classes != loaded.meta["num_classes"]:
        raise UserError(f"the model expects {loaded.meta['image_shape']} images and {loaded.meta['num_classes']} "
                        f"classes; {dataset} has {list(data.image_shape)} and {data.num_classes}")
    device = next(loaded.model.parameters()).device
    logits = predict_logits(loaded.model, loaded.normalize, data.x_test, batch_size, device)
    return {"dataset": dataset, "test_split": fer_test if dataset == "fer2013" else "test",
            "num_test": len(data.y_test), **classification_report(logits, data.y_test, data.num_classes),
            "class_names": data.class_names}


def write_safetensors(loaded: LoadedModel, path, extra_meta: dict | None = None) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in loaded.model.state_dict().items()}
    meta = {**loaded.meta, **(extra_meta or {})}
    save_file(state, str(path), metadata={"fixmatch": json.dumps(meta)})


def read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["fixmatch"])
        return load_file(str(path)), meta
    except (KeyError, ValueError, OSError) as e:
        raise UserError(f"{path} is not a fixmatch .safetensors export ({e})") from None


def image_to_tensor(image, image_shape) -> torch.Tensor:
    """A PIL image -> uint8 (C, H, W) at the model's input size: EXIF orientation applied, converted
    to grey or RGB as the model expects, resized with area averaging (PIL's BOX filter)."""
    from PIL import Image, ImageOps

    c, h, w = image_shape
    image = ImageOps.exif_transpose(image).convert("L" if c == 1 else "RGB")
    if image.size != (w, h):
        image = image.resize((w, h), Image.BOX)
    arr = np.array(image, dtype=np.uint8)  # a writable copy (torch warns about read-only arrays)
    arr = arr[None] if c == 1 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


def open_image(path):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
        return image
    except FileNotFoundError:
        raise UserError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image {path}: {e}") from None
