"""STL-10 reader: small files written in the exact official binary format (column-major 3x96x96
bytes, labels 1..10, fold_indices.txt) from real CIFAR-10 pixels must load back exactly, agree with
the official FixMatch script's own decoding formula, and fail with clear errors when damaged."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from shared_data import SHARED, read_head

from fixmatch.data import DATASETS, download, load_dataset, stl10
from fixmatch.errors import DataError

pytestmark = pytest.mark.skipif(
    not (SHARED / "cifar10_device.npz.xz").is_file(), reason=f"shared offline data not found in {SHARED}"
)

N_TRAIN, N_TEST, N_UNL = 20, 10, 12


@pytest.fixture(scope="module")
def pictures():
    """42 real CIFAR-10 images upscaled 3x to 96x96 (NHWC uint8), plus a per-pixel ramp so that
    a transposed or mirrored read can never match by accident."""
    x = read_head(SHARED / "cifar10_device.npz.xz", N_TRAIN + N_TEST + N_UNL)
    big = np.kron(x, np.ones((1, 3, 3, 1), np.uint8))
    ramp = (np.arange(96)[:, None] * 2 + np.arange(96)[None, :]).astype(np.uint8)  # not symmetric
    return (big + ramp[None, :, :, None]).astype(np.uint8)


def official_bytes(nhwc: np.ndarray) -> bytes:
    """The release's layout: per image, per channel, column-major (x outer, y inner)."""
    return np.ascontiguousarray(nhwc.transpose(0, 3, 2, 1)).tobytes()


def write_release(folder: Path, pictures, unlabeled=True) -> dict:
    folder.mkdir(parents=True)
    y_train = np.arange(N_TRAIN) % 10
    y_test = (np.arange(N_TEST) * 3) % 10
    parts = {"train": pictures[:N_TRAIN], "test": pictures[N_TRAIN : N_TRAIN + N_TEST]}
    (folder / "train_X.bin").write_bytes(official_bytes(parts["train"]))
    (folder / "train_y.bin").write_bytes((y_train + 1).astype(np.uint8).tobytes())
    (folder / "test_X.bin").write_bytes(official_bytes(parts["test"]))
    (folder / "test_y.bin").write_bytes((y_test + 1).astype(np.uint8).tobytes())
    if unlabeled:
        (folder / "unlabeled_X.bin").write_bytes(official_bytes(pictures[N_TRAIN + N_TEST :]))
    rng = np.random.RandomState(0)
    folds = [rng.choice(N_TRAIN, 4, replace=False) for _ in range(10)]  # 10 lines, like the release
    (folder / "fold_indices.txt").write_text("\n".join(" ".join(map(str, f)) for f in folds) + "\n")
    (folder / "class_names.txt").write_text("\n".join(stl10.CLASS_NAMES) + "\n")
    return dict(y_train=y_train, y_test=y_test, folds=folds, **parts)


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def test_reads_the_official_format_exactly(tmp_path, pictures):
    ref = write_release(tmp_path / "stl10_binary", pictures)
    d = load_dataset("stl10", tmp_path)
    assert d.x_train.shape == (N_TRAIN, 3, 96, 96) and d.x_train.dtype == torch.uint8
    assert torch.equal(d.x_train, nchw(ref["train"])) and torch.equal(d.x_test, nchw(ref["test"]))
    assert torch.equal(d.x_unlabeled, nchw(pictures[N_TRAIN + N_TEST :]))
    assert d.y_train.tolist() == ref["y_train"].tolist() and d.y_test.tolist() == ref["y_test"].tolist()
    assert d.class_names == list(stl10.CLASS_NAMES) and d.class_names[7] == "monkey"
    # The official FixMatch create_datasets.py decodes with reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)
    # to NHWC: our NCHW must be exactly that, permuted.
    raw = np.frombuffer((tmp_path / "stl10_binary" / "train_X.bin").read_bytes(), np.uint8)
    official = raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)
    assert np.array_equal(d.x_train.permute(0, 2, 3, 1).numpy(), official)
    # fold F = line F (0-based) of fold_indices.txt, as official create_split.py reads line `seed`
    assert sorted(d.fixed_splits) == list(range(10))
    for f in range(10):
        assert d.fixed_splits[f].tolist() == sorted(ref["folds"][f].tolist())
    # --data-dir may also point at stl10_binary/ itself
    assert torch.equal(load_dataset("stl10", tmp_path / "stl10_binary").x_test, d.x_test)


def test_without_unlabeled_and_resized(tmp_path):
    x = read_head(SHARED / "cifar10_device.npz.xz", N_TRAIN + N_TEST + N_UNL)
    pictures = np.kron(x, np.ones((1, 3, 3, 1), np.uint8))  # plain 3x upscale, no ramp
    write_release(tmp_path / "stl10_binary", pictures, unlabeled=False)
    with pytest.raises(DataError, match="unlabeled_X.bin is missing"):
        load_dataset("stl10", tmp_path)
    d = load_dataset("stl10", tmp_path, stl10_unlabeled=False, image_size=32)
    assert d.x_unlabeled is None and d.x_train.shape == (N_TRAIN, 3, 32, 32)
    # 96 -> 32 of a 3x-upscaled CIFAR picture: close to the 32x32 original
    small = nchw(x[:N_TRAIN]).float()
    assert (d.x_train.float() - small).abs().mean() < 3
    assert "resized" in d.eval_note


@pytest.mark.parametrize(
    "damage, match",
    [
        ("short_images", "not a whole number of 3x96x96 images"),
        ("label_count", "has 19 labels for 20 images"),
        ("label_range", "labels must lie in 1..10"),
        ("fold_range", "fold_indices.txt: every line must list distinct indices"),
        ("fold_text", "must hold lines of integer indices"),
    ],
)
def test_damaged_files_name_the_file(tmp_path, pictures, damage, match):
    folder = tmp_path / "stl10_binary"
    write_release(folder, pictures)
    if damage == "short_images":
        (folder / "test_X.bin").write_bytes((folder / "test_X.bin").read_bytes()[:-5])
    elif damage == "label_count":
        (folder / "train_y.bin").write_bytes((folder / "train_y.bin").read_bytes()[:-1])
    elif damage == "label_range":
        (folder / "train_y.bin").write_bytes(bytes([0] * N_TRAIN))
    elif damage == "fold_range":
        (folder / "fold_indices.txt").write_text(f"0 1 {N_TRAIN}\n")
    elif damage == "fold_text":
        (folder / "fold_indices.txt").write_text("0 1 two\n")
    with pytest.raises(DataError, match=match):
        load_dataset("stl10", tmp_path)


def test_missing_names_the_layouts_and_url(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("stl10", tmp_path)
    msg = str(e.value)
    assert "stl10_binary/" in msg and "stl10_binary.tar.gz" in msg and "--download" in msg
    assert "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz" in msg


def make_archive(src: Path, dest: Path) -> bytes:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src, arcname="stl10_binary")
    return dest.read_bytes()


def test_archive_and_download_from_mirror(tmp_path, pictures, monkeypatch):
    ref = write_release(tmp_path / "src" / "stl10_binary", pictures)
    payload = make_archive(tmp_path / "src" / "stl10_binary", tmp_path / "src" / "a.tar.gz")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "stl10_binary.tar.gz").write_bytes(payload)
    monkeypatch.setenv(download.MIRROR_ENV, mirror.as_uri())
    monkeypatch.setitem(
        download.REMOTES, "stl10_binary.tar.gz", download.Remote("unused", hashlib.md5(payload).hexdigest())
    )
    data = tmp_path / "data"
    d = load_dataset("stl10", data, download=True)
    assert torch.equal(d.x_train, nchw(ref["train"])) and d.x_unlabeled.shape[0] == N_UNL
    assert sorted(p.name for p in (data / "stl10_binary").iterdir()) == sorted(
        p.name for p in (tmp_path / "src" / "stl10_binary").iterdir()
    )
    monkeypatch.setitem(download.REMOTES, "stl10_binary.tar.gz", download.Remote("unused", "0" * 32))
    with pytest.raises(DataError, match="md5"):
        load_dataset("stl10", tmp_path / "other", download=True)


def test_registry_entry_is_the_paper_row():
    from fixmatch.config import TrainConfig
    from fixmatch.training.resolve import resolve

    assert DATASETS["stl10"].defaults == dict(model="wrn37_2", num_labels=1000)  # the rest: paper recipe
    cfg = resolve(TrainConfig(dataset="stl10"))
    assert (cfg.model, cfg.num_labels, cfg.steps, cfg.batch_size) == ("wrn37_2", 1000, 2**20, 64)
    assert download.REMOTES["stl10_binary.tar.gz"].md5 == "91f7769df0f17e558f3565bffb0c7dfb"
