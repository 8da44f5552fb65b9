"""FixMatch learns: on the embedded digits (20 labels), the demo's schedule. About 30 s on one core.

A mis-wired step (views swapped, no strong augmentation, a frozen EMA, ...) breaks at least one of:
the share of unlabeled images with a confident and correct pseudo-label grows as training goes on,
and FixMatch
ends far ahead of the supervised baseline trained on the same labels."""

from __future__ import annotations

import json

import pytest

from fixmatch.config import TrainConfig
from fixmatch.training.train import compare


@pytest.mark.slow  # two full demo trainings
def test_fixmatch_learns_from_unlabeled_digits(tmp_path):
    sup, fix = compare(TrainConfig(seed=0, progress=False, out=str(tmp_path)), log=lambda *_: None)
    assert (sup["algorithm"], fix["algorithm"], fix["num_labels"], fix["steps"]) == ("supervised", "fixmatch", 20, 1000)
    records = [json.loads(line) for line in (tmp_path / "fixmatch" / "metrics.jsonl").read_text().splitlines()]
    early, late = records[0], records[-1]  # step 100 and step 1000
    correct = [r["mask_rate"] * (r["pseudo_label_accuracy"] or 0.0) for r in (early, late)]
    assert late["mask_rate"] > early["mask_rate"] + 0.3, (early, late)  # more confident pseudo-labels ...
    assert correct[1] > correct[0] + 0.3 and late["pseudo_label_accuracy"] > 0.9, (early, late)  # ... and right
    assert fix["accuracy"] > sup["accuracy"] + 0.10 and fix["median_last20"] > sup["median_last20"] + 0.10, (sup, fix)
