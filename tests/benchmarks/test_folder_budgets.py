"""benchmarks/folder_budgets.py: the size its fixed rows name, and the table RESULTS.md shows."""

from __future__ import annotations

import json
import sys

from image_folders import small_folder
from repo import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import folder_budgets  # noqa: E402  (from benchmarks/, put on the path above)


def test_the_fixed_rows_name_the_size_a_folders_run_takes_without_a_budget(tmp_path):
    assert folder_budgets.fixed_default_size(small_folder(tmp_path / "small", side=12)) == 12
    assert folder_budgets.fixed_default_size(small_folder(tmp_path / "large", side=64)) == 32  # the cap


def row(config: str, accuracy: float, seed=None, **extra) -> dict:
    return dict(
        dataset="digits", config=config, budget_min=1.0, seed=seed, wall_s=59.5, rc=0, load_before=1.0,
        load_after=1.2, algorithm="fixmatch", model="cnn_small", image_size=8, steps=100,
        accuracy=accuracy, median_last20=accuracy, **extra,
    )  # fmt: skip


def test_the_table_takes_the_latest_row_of_each_cell_and_leaves_seeded_repeats_out(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("\n".join(json.dumps(r) for r in [row("auto", 0.5), row("fixed", 0.6)]))
    second.write_text("\n".join(json.dumps(r) for r in [row("auto", 0.9), row("auto", 0.1, seed=1)]))
    lines = folder_budgets.table([first, second]).splitlines()
    assert len(lines) == 3 and lines[2].startswith("| digits | 1 min | 90.0% / 90.0%")
    assert "60.0% / 60.0%" in lines[2] and "not run" in lines[2]  # supervised: no row
