"""FixMatch learns: on the embedded digits (20 labels), the demo's schedule. About 30 s on one core.

A mis-wired step (views swapped, no strong augmentation, a frozen EMA, ...) breaks at least one of:
the share of unlabeled images with a confident and correct pseudo-label grows as training goes on,
and FixMatch
ends far ahead of the supervised baseline trained on the same labels."""

from __future__ import annotations

import json

import pytest

from fixmatch.config import TrainConfig
from fixmatch.training.train import compare, train


@pytest.mark.slow  # two full demo trainings
def test_fixmatch_learns_from_unlabeled_digits(tmp_path):
    sup, fix = compare(TrainConfig(seed=0, progress=False, threads=1, out=str(tmp_path)), log=lambda *_: None)
    assert (sup["algorithm"], fix["algorithm"], fix["num_labels"], fix["steps"]) == ("supervised", "fixmatch", 20, 1000)
    records = [json.loads(line) for line in (tmp_path / "fixmatch" / "metrics.jsonl").read_text().splitlines()]
    early, late = records[0], records[-1]  # step 100 and step 1000
    correct = [r["mask_rate"] * (r["pseudo_label_accuracy"] or 0.0) for r in (early, late)]
    assert late["mask_rate"] > early["mask_rate"] + 0.3, (early, late)  # more confident pseudo-labels ...
    assert correct[1] > correct[0] + 0.3 and late["pseudo_label_accuracy"] > 0.9, (early, late)  # ... and right
    assert fix["accuracy"] > sup["accuracy"] + 0.10 and fix["median_last20"] > sup["median_last20"] + 0.10, (sup, fix)


@pytest.fixture(scope="module")
def supervised_digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("supervised")
    return train(
        TrainConfig(seed=0, algorithm="supervised", progress=False, threads=1, out=str(out)), log=lambda *_: None
    )


@pytest.mark.slow  # one full demo training each
@pytest.mark.parametrize("algorithm", ["flexmatch", "freematch", "softmatch", "adamatch", "dash"])
def test_each_ssl_algorithm_learns_from_unlabeled_digits(algorithm, supervised_digits, tmp_path):
    """The demo's schedule and labels: each ends far ahead of the supervised baseline, with most
    pool images pseudo-labeled right (a wrong threshold, weight or state update breaks one of these)."""
    sup = supervised_digits
    run = train(
        TrainConfig(seed=0, algorithm=algorithm, progress=False, threads=1, out=str(tmp_path)), log=lambda *_: None
    )
    assert (run["num_labels"], run["steps"]) == (sup["num_labels"], sup["steps"]) == (20, 1000)
    assert run["accuracy"] > sup["accuracy"] + 0.10 and run["median_last20"] > sup["median_last20"] + 0.10, (sup, run)
    assert run["pseudo_label_accuracy"] > 0.85, run
