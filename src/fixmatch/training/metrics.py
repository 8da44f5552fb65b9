"""Batched inference and accuracy metrics on uint8 image tensors: what training evaluates every
`eval_every` steps and `fixmatch evaluate` reports (the one place these figures are computed)."""

from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def predict_logits(
    model: nn.Module, normalize: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device
) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = [model(normalize(images[i : i + batch_size].to(device))).float() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out)


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts: rows the true class, columns the predicted one."""
    pred = logits.argmax(dim=1).to(labels.device)
    return torch.bincount(labels * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)


def report_from_confusion(confusion: torch.Tensor) -> dict:
    """Accuracy, per-class accuracy and the matrix itself (the one place these figures are computed)."""
    confusion = confusion.cpu()
    per_class = confusion.diag().float() / confusion.sum(dim=1).clamp_min(1).float()
    return {
        "accuracy": float(confusion.diag().sum() / confusion.sum().clamp_min(1)),
        "per_class_accuracy": [round(float(a), 4) for a in per_class],
        "confusion_matrix": confusion.tolist(),  # rows: true class, columns: predicted
    }
