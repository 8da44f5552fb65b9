"""Files a user hands fixmatch that are odd rather than wrong: names that are not UTF-8, an image
cache someone altered, a data folder that changed under a run. Each one is handled or named plainly;
every input here is made in the test."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from image_folders import grey_png, small_folder

from fixmatch.cli import main

BAD_NAME = os.fsdecode(b"bad\xff.png")  # not UTF-8: Python holds the byte as a lone surrogate
ODD_NAME = os.fsdecode(b"ok\xfe.png")


def train_argv(root: Path, out: Path, *more: str) -> list[str]:
    return ["train", "--dataset", "folders", "--data-dir", str(root), "--steps", "2", "--eval-every", "2",
            "--batch-size", "4", "--mu", "2", "--no-progress", "--threads", "1", "--out", str(out), *more]  # fmt: skip


def test_file_names_that_are_not_utf8(digits_model, tmp_path, capsys):
    """train lists the unreadable one in skipped.txt under its own bytes; predict writes a CSV row
    for each (the same bytes), and the file is complete."""
    root = small_folder(tmp_path / "data")
    (root / "unlabeled" / BAD_NAME).write_bytes(b"not an image")
    grey_png(root / "unlabeled" / ODD_NAME, seed=7)
    assert main(train_argv(root, tmp_path / "run")) == 0
    skipped = (tmp_path / "run" / "skipped.txt").read_bytes()
    assert os.fsencode(root / "unlabeled" / BAD_NAME) + b"\t" in skipped

    out = tmp_path / "preds.csv"
    assert main(["predict", "--model", str(digits_model["onnx"]), str(root / "unlabeled"), "--csv", str(out)]) == 0
    capsys.readouterr()
    rows = {
        os.fsencode(r["path"]): r
        for r in csv.DictReader(io.StringIO(out.read_bytes().decode("utf-8", "surrogateescape")))
    }
    assert rows[os.fsencode(root / "unlabeled" / BAD_NAME)]["error"] != ""
    assert rows[os.fsencode(root / "unlabeled" / ODD_NAME)]["label"] in digits_model["class_names"]
    assert len(rows) == 6


def test_a_model_file_whose_name_is_not_utf8_exports_and_loads(digits_model, tmp_path, capsys):
    """safetensors opens only paths that are valid UTF-8: a model exported under any file name the
    system allows loads again and predicts (.safetensors and .onnx alike)."""
    run = digits_model["run"] / "last.pt"
    image = grey_png(tmp_path / "digit.png", seed=3, side=8)
    for suffix in (".safetensors", ".onnx"):
        model = tmp_path / os.fsdecode(b"model\xff" + suffix.encode())
        flag = "--" + suffix[1:]
        assert main(["export", "--checkpoint", str(run), flag, str(model)]) == 0
        capsys.readouterr()
        assert main(["predict", "--model", str(model), str(image)]) == 0, capsys.readouterr().err
        assert json.loads(capsys.readouterr().out)["label"] in [str(i) for i in range(10)]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda a: np.zeros((len(a), 3, 5, 5), np.uint8),  # the right row count, another image shape
        lambda a: a.astype(np.float64),  # the right shape, another type
        lambda a: a[:, :, :, :6],  # fewer columns
        lambda a: a ^ np.uint8(1),  # the same shape and type, other pixels: caught by the index's digest
    ],
    ids=["shape", "dtype", "cut", "pixels"],
)
def test_an_altered_image_cache_is_rebuilt_not_trusted(tmp_path, tamper):
    from fixmatch.data import load_dataset

    root = small_folder(tmp_path / "data")
    first = load_dataset("folders", str(root))
    (images,) = (root / ".fixmatch-cache").glob("images-*.npy")
    np.save(images, tamper(np.load(images)))
    again = load_dataset("folders", str(root))
    assert again.x_train.shape == first.x_train.shape == (6, 1, 12, 12)
    assert again.x_train.dtype == first.x_train.dtype and (again.x_train == first.x_train).all()
    assert (again.x_unlabeled == first.x_unlabeled).all()


def test_resume_checks_that_its_data_is_the_data_it_started_with(tmp_path, capsys):
    root = small_folder(tmp_path / "data")
    run = tmp_path / "run"
    assert main(train_argv(root, run)) == 0
    other = small_folder(tmp_path / "other", per_class=2)
    changes = {
        "a class added": (lambda: grey_png(root / "labeled" / "c" / "0.png", seed=50), [], "(added c)"),
        "another folder": (lambda: None, ["--data-dir", str(other)], "6 -> 4 train images"),
        "another dataset": (lambda: None, ["--dataset", "digits"], "dataset folders -> digits"),
        "an image replaced": (
            lambda: grey_png(root / "labeled" / "a" / "1.png", seed=99),
            [],
            "the same counts, but other images or labels",
        ),
    }
    for name, (change, flags, words) in changes.items():
        change()
        code = main(["train", "--resume", str(run), "--steps", "4", *flags])
        err = capsys.readouterr().err
        assert code == 2 and "its data is not the data it started with" in err and words in err, (name, err)
        for extra in (root / "labeled" / "c",):  # undo the change: the next case starts clean
            if extra.exists():
                (extra / "0.png").unlink()
                extra.rmdir()
    grey_png(root / "labeled" / "a" / "1.png", seed=1)  # the original pixels again
    assert main(["train", "--resume", str(run), "--steps", "4"]) == 0
    capsys.readouterr()


def test_unreadable_files_are_counted_once_and_named_alike_by_train_and_predict(digits_model, tmp_path, capsys):
    """One count ("decoded 10 of 12 images, 2 unreadable", not "decoded 12 of 12" then "skipped 2"),
    and the reason predict gives for a file is the one train lists in skipped.txt."""
    root = small_folder(tmp_path / "data")
    (root / "unlabeled" / "empty.png").write_bytes(b"")
    (root / "unlabeled" / "junk.png").write_bytes(b"\xff\xd8\xff not really a jpeg")
    assert main(train_argv(root, tmp_path / "run")) == 0
    out = capsys.readouterr()
    assert "decoded 10 of 12 images, 2 unreadable" in out.err and not re.search(r"skipped \d", out.err + out.out)
    assert "2 unreadable image files left out (listed in skipped.txt)" in out.out
    listed = dict(line.split("\t") for line in (tmp_path / "run" / "skipped.txt").read_text().splitlines())
    assert listed[str(root / "unlabeled" / "empty.png")] == "empty file (0 bytes)"

    assert main(["predict", "--model", str(digits_model["onnx"]), str(root / "unlabeled")]) == 0
    errors = {r["path"]: r["error"] for r in json.loads(capsys.readouterr().out) if "error" in r}
    assert errors == listed
