#!/usr/bin/env python
"""Evaluate a FER2013 model on PrivateTest and PublicTest and write the model card's figures:
docs/fer2013_eval.json (accuracy, per-class accuracy, confusion matrices) and
docs/fer2013_confusion.png (row-normalised PrivateTest confusion matrix).

    python benchmarks/model_card_figures.py --model fer2013 --data-dir DATA
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from fixmatch.inference.evaluate import evaluate_on_dataset
from fixmatch.inference.loading import load_model


def plot(report, class_names, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(report["confusion_matrix"], dtype=float)
    norm = cm / cm.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(6.4, 5.4), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(cm)):
        for j in range(len(cm)):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}\n{int(cm[i, j])}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(7), class_names, rotation=45, ha="right")
    ax.set_yticks(range(7), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"FER2013 PrivateTest, accuracy {100 * report['accuracy']:.2f}%")
    fig.colorbar(im, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fer2013")
    p.add_argument("--data-dir", default=None, help="default: $FIXMATCH_DATA or ./data")
    p.add_argument("--out", default="docs")
    args = p.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(args.model)
    reports = {split: evaluate_on_dataset(loaded, "fer2013", args.data_dir, split) for split in ("private", "public")}
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    (out / "fer2013_eval.json").write_text(json.dumps({"class_names": loaded.class_names, **reports}, indent=1))
    plot(reports["private"], loaded.class_names, out / "fer2013_confusion.png")
    for split, r in reports.items():
        print(
            f"{split}: {100 * r['accuracy']:.2f}% of {r['num_test']}; per class "
            + ", ".join(f"{c} {100 * a:.1f}%" for c, a in zip(loaded.class_names, r["per_class_accuracy"]))
        )


if __name__ == "__main__":
    main()
