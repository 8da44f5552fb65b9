"""A trained model scored on a dataset's test split (`fixmatch evaluate`), with the metrics that
training logs (fixmatch.training.metrics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fixmatch.config import FIELD_NAMES, from_dict
from fixmatch.data import load_data
from fixmatch.errors import UserError
from fixmatch.training.metrics import confusion_matrix, predict_logits, report_from_confusion

if TYPE_CHECKING:
    from fixmatch.inference.loading import LoadedModel


def classification_report(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    return report_from_confusion(confusion_matrix(logits, labels, num_classes))


def evaluate_on_dataset(
    loaded: "LoadedModel",
    dataset: str,
    data_dir=None,
    fer_test: str = "private",
    batch_size: int = 512,
    run_config: dict | None = None,
) -> dict:
    """Accuracy, per-class accuracy and confusion matrix of `loaded` on a dataset's test split.
    run_config: the training run's saved config, for how its data was read (folders: image size,
    channels, held-out images); dataset, data_dir and fer_test given here take precedence."""
    data = matching_data(loaded.meta, dataset, data_dir, fer_test, run_config)
    device = next(loaded.model.parameters()).device
    logits = predict_logits(loaded.model, loaded.normalize, data.x_test, batch_size, device)
    return split_report(logits, data, dataset, fer_test)


def matching_data(meta: dict, dataset: str, data_dir=None, fer_test: str = "private", run_config: dict | None = None):
    """The dataset as the run read it, checked against the model's input shape and classes."""
    base = {k: v for k, v in (run_config or {}).items() if k in FIELD_NAMES and k != "out"}
    if base.get("dataset") != dataset:  # another dataset: nothing of the run's data settings applies
        base = {}
    data = load_data(from_dict({**base, "dataset": dataset, "data_dir": data_dir, "fer_test": fer_test}))
    if list(data.image_shape) != list(meta["image_shape"]) or data.num_classes != meta["num_classes"]:
        raise UserError(
            f"the model expects {meta['image_shape']} images and {meta['num_classes']} "
            f"classes; {dataset} has {list(data.image_shape)} and {data.num_classes}"
        )
    return data


def split_report(scores: torch.Tensor, data, dataset: str, fer_test: str) -> dict:
    """Logits or probabilities of the whole test split -> evaluate's report."""
    return {
        "dataset": dataset,
        "test_split": fer_test if dataset == "fer2013" else "test",
        "num_test": len(data.y_test),
        **classification_report(scores, data.y_test, data.num_classes),
        "class_names": data.class_names,
    }
