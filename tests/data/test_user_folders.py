"""`folders` (your own images): layouts written with real CIFAR-10 / FER2013 pixels in mixed sizes,
formats and modes must load to the exact pixels where no resampling is involved; broken files are
skipped and listed; layout mistakes are one clear error before any decoding; the cache is reused
and invalidated per file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from repo import REPO
from shared_data import cifar_images, fer_faces, needs_shared_data

from fixmatch.data import DATASETS, image_cache, load_dataset, user_folders
from fixmatch.errors import DataError, UserError

pytestmark = needs_shared_data


@pytest.fixture(scope="module")
def rgb():
    """24 real CIFAR-10 images, (24, 32, 32, 3) uint8."""
    return cifar_images(24)


@pytest.fixture(scope="module")
def faces():
    """12 real FER2013 faces, (12, 48, 48) uint8."""
    return fer_faces(12)


def put(path: Path, array, **save_kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save_kw)
    return path


def chw(a):
    a = torch.from_numpy(np.ascontiguousarray(a))
    return a[None] if a.ndim == 2 else a.permute(2, 0, 1)


def load(root, **kw):
    return load_dataset("folders", root, **kw)


def simple_folder(root: Path, rgb, n_unlabeled=6, test=True):
    """2 classes x 3 labeled 32x32 PNGs, unlabeled PNGs in nested folders, a test folder."""
    for i in range(6):
        put(root / "labeled" / ("cat" if i < 3 else "dog") / f"{i}.png", rgb[i])
    for i in range(n_unlabeled):
        put(root / "unlabeled" / f"d{i % 2}" / "deeper" / f"u{i}.png", rgb[6 + i])
    if test:
        put(root / "test" / "cat" / "t0.png", rgb[20])
        put(root / "test" / "dog" / "t1.png", rgb[21])
    return root


# ---------------------------------------------------------------- formats, sizes, modes


def test_mixed_sizes_formats_and_modes(tmp_path, rgb, faces):
    lab = tmp_path / "labeled"
    put(lab / "a" / "plain.png", rgb[0])  # 32x32 RGB: exact
    padded = np.zeros((32, 40, 3), np.uint8)
    padded[:, 4:36] = rgb[1]
    put(lab / "a" / "wide.png", padded)  # 40x32: the centre crop recovers rgb[1] exactly
    tall = np.zeros((38, 32, 3), np.uint8)
    tall[3:35] = rgb[2]
    put(lab / "a" / "nested" / "tall.bmp", tall)  # 32x38 BMP, one level deeper in the class folder
    rgba = np.dstack([rgb[3], np.full((32, 32), 255, np.uint8)])
    put(lab / "a" / "opaque.png", rgba)  # RGBA, fully opaque: equals RGB
    put(lab / "b" / "grey.png", faces[0])  # 48x48 grey -> 32x32, R = G = B
    put(lab / "b" / "photo.JPG", rgb[4], quality=95)  # upper-case suffix, JPEG
    put(lab / "b" / "big.png", np.kron(rgb[5], np.ones((4, 4, 1), np.uint8)))  # 128x128: shrunk 4x
    Image.fromarray(rgb[6]).convert("P", palette=Image.ADAPTIVE).save(lab / "b" / "pal.gif")
    deep = (faces[1].astype(np.uint16) << 8) | 0x7F  # 16-bit grey: the top byte is the picture
    Image.fromarray(deep).save(lab / "b" / "deep16.png")
    (lab / "b" / ".DS_Store").write_bytes(b"\0junk")  # hidden: ignored, not even listed as skipped
    put(tmp_path / "test" / "a" / "t.png", rgb[7])

    d = load(tmp_path)
    assert d.class_names == ["a", "b"] and d.x_train.dtype == torch.uint8
    assert d.x_train.shape == (9, 3, 32, 32) and d.image_shape == (3, 32, 32)  # size 32: the median side
    assert d.skipped == [] and d.y_train.tolist() == [0] * 4 + [1] * 5
    a = {name: d.x_train[i] for i, name in enumerate(["nested/tall", "opaque", "plain", "wide"])}  # sorted
    assert torch.equal(a["plain"], chw(rgb[0])) and torch.equal(a["wide"], chw(rgb[1]))
    assert torch.equal(a["nested/tall"], chw(rgb[2])) and torch.equal(a["opaque"], chw(rgb[3]))
    b = dict(zip(["big", "deep16", "grey", "pal", "photo"], d.x_train[4:]))
    ref_grey = np.asarray(Image.fromarray(faces[0]).resize((32, 32), Image.BILINEAR))
    assert torch.equal(b["grey"], chw(np.dstack([ref_grey] * 3)))
    assert torch.equal(
        b["deep16"][0], torch.from_numpy(np.array(Image.fromarray(faces[1]).resize((32, 32), Image.BILINEAR)))
    )
    assert (b["big"].float() - chw(rgb[5]).float()).abs().mean() < 6  # a 4x box upscale, shrunk back
    assert (b["photo"].float() - chw(rgb[4]).float()).abs().mean() < 6  # JPEG q95
    assert (b["pal"].float() - chw(rgb[6]).float()).abs().mean() < 12  # 256-colour palette
    assert torch.equal(d.x_test[0], chw(rgb[7])) and d.eval_note == "test/ folder (1 images)"


def test_channels_default_from_labeled_images_and_overrides(tmp_path, rgb, faces):
    for i in range(4):
        put(tmp_path / "labeled" / f"c{i % 2}" / f"{i}.png", faces[i])
    put(tmp_path / "unlabeled" / "colour.png", rgb[0])  # colour in unlabeled/ does not matter
    d = load(tmp_path)
    assert d.x_train.shape == (4, 1, 32, 32)  # all grey -> 1 channel; 48 px capped at 32
    assert torch.equal(d.x_unlabeled[0, 0], torch.from_numpy(np.array(Image.fromarray(rgb[0]).convert("L"))))
    d = load(tmp_path, image_size=48, channels=3)
    assert d.x_train.shape == (4, 3, 48, 48) and torch.equal(d.x_train[0, 1], torch.from_numpy(faces[0]))
    with pytest.raises(UserError, match="--channels"):
        load(tmp_path, channels=2)
    with pytest.raises(UserError, match="--image-size"):
        load(tmp_path, image_size=4)


def test_nesting_and_pool(tmp_path, rgb):
    simple_folder(tmp_path, rgb, n_unlabeled=6)
    put(tmp_path / "unlabeled" / "a" / "b" / "c" / "d" / "deep.png", rgb[19])
    put(tmp_path / "unlabeled" / ".thumbnails" / "x.png", rgb[18])  # hidden folder: ignored
    d = load(tmp_path)
    assert d.x_train.shape[0] == 6 and d.x_unlabeled.shape == (7, 3, 32, 32)
    assert torch.equal(d.x_unlabeled[0], chw(rgb[19]))  # a/b/c/d/deep.png sorts first
    assert d.y_test.tolist() == [0, 1] and torch.equal(d.x_test[1], chw(rgb[21]))
    (tmp_path / "unlabeled" / "a" / "loop").symlink_to(tmp_path / "unlabeled")  # a cycle: listed once
    assert load(tmp_path).x_unlabeled.shape[0] == 7
    (tmp_path / "unlabeled" / "a" / "loop").unlink()
    (tmp_path / "unlabeled").rename(tmp_path / "elsewhere")
    d = load(tmp_path)  # no unlabeled/ at all: allowed, the pool is the labeled images
    assert d.x_unlabeled is None


# ---------------------------------------------------------------- broken files and layout errors


def test_corrupt_files_are_skipped_and_listed(tmp_path, rgb):
    simple_folder(tmp_path, rgb)
    broken = tmp_path / "unlabeled" / "broken"
    broken.mkdir()
    (broken / "empty.png").write_bytes(b"")
    good = put(broken / "tmp.png", np.kron(rgb[0], np.ones((4, 4, 1), np.uint8)))
    (broken / "truncated.png").write_bytes(good.read_bytes()[:2000])
    good.unlink()
    (broken / "text.jpg").write_text("not a picture")
    (broken / "readme.txt").write_text("hello")
    (tmp_path / "labeled" / "cat" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    d = load(tmp_path)
    reasons = {Path(p).name: r for p, r in d.skipped}
    assert set(reasons) == {"empty.png", "truncated.png", "text.jpg", "readme.txt", "bad.png"}
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert "truncated" in reasons["truncated.png"] and "not an image" in reasons["text.jpg"]
    assert all(Path(p).is_absolute() for p, _ in d.skipped)
    assert d.x_train.shape[0] == 6 and d.x_unlabeled.shape[0] == 6  # the readable ones, all of them
    d2 = load(tmp_path)  # from the cache: the same list, nothing decoded again
    assert d2.skipped == d.skipped
    for f in (tmp_path / "labeled" / "dog").iterdir():  # a class whose every file is unreadable
        f.write_bytes(b"")
    with pytest.raises(DataError, match="no readable labeled image.*dog"):
        load(tmp_path)


@pytest.mark.parametrize(
    "case, error, match",
    [
        ("no_labeled", DataError, "labeled/<class>"),
        ("no_classes", DataError, "no class folders"),
        ("empty_class", DataError, "empty class folder.*bird"),
        ("one_class", DataError, "at least two"),
        ("loose_file", DataError, "outside any class folder"),
        ("unknown_test_class", DataError, "test.*lacks: horse"),
        ("empty_test", DataError, "test.*holds no files"),
        ("val_and_test", UserError, "--val-per-class"),
        ("val_too_big", UserError, "leaves no labeled image"),
    ],
)
def test_layout_errors_before_any_decoding(tmp_path, rgb, monkeypatch, case, error, match):
    simple_folder(tmp_path, rgb)
    kw = {}
    if case == "no_labeled":
        (tmp_path / "labeled").rename(tmp_path / "labelled")
    elif case == "no_classes":
        for d in (tmp_path / "labeled").iterdir():
            d.rename(tmp_path / d.name)
    elif case == "empty_class":
        (tmp_path / "labeled" / "bird").mkdir()
    elif case == "one_class":
        for f in (tmp_path / "labeled" / "dog").iterdir():
            f.unlink()
        (tmp_path / "labeled" / "dog").rmdir()
    elif case == "loose_file":
        put(tmp_path / "labeled" / "x.png", rgb[0])
    elif case == "unknown_test_class":
        put(tmp_path / "test" / "horse" / "h.png", rgb[0])
    elif case == "empty_test":
        for f in (tmp_path / "test").rglob("*.png"):
            f.unlink()
    elif case == "val_and_test":
        kw = dict(val_per_class=1)
    elif case == "val_too_big":
        (tmp_path / "test").rename(tmp_path / "later")
        kw = dict(val_per_class=3)
    decoded = []
    monkeypatch.setattr(image_cache, "decode", lambda *a: decoded.append(a))
    with pytest.raises(error, match=match):
        load(tmp_path, **kw)
    assert decoded == []  # the error came before any work


def test_cli_error_exits_2(tmp_path, rgb):
    simple_folder(tmp_path, rgb)
    (tmp_path / "labeled" / "bird").mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "fixmatch", "train", "--dataset", "folders", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "empty class folder" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------- evaluation without test/


def test_no_test_folder_and_val_per_class(tmp_path, rgb):
    simple_folder(tmp_path, rgb, test=False)
    d = load(tmp_path)
    assert torch.equal(d.x_test, d.x_train) and d.eval_note.startswith("no held-out images")
    d = load(tmp_path, val_per_class=1)
    assert d.x_train.shape[0] == 4 and d.x_test.shape[0] == 2 and sorted(d.y_test.tolist()) == [0, 1]
    assert "held-out: 1 labeled image per class" in d.eval_note
    held = {bytes(x.numpy()) for x in d.x_test}
    assert not held & {bytes(x.numpy()) for x in d.x_train}  # held out = not trained on
    assert load(tmp_path, val_per_class=1).x_test.equal(d.x_test)  # the same images every run


# ---------------------------------------------------------------- the cache


def count_decodes(monkeypatch):
    calls = []
    real = image_cache.decode

    def counting(path, size, channels):
        calls.append(Path(path).name)
        return real(path, size, channels)

    monkeypatch.setattr(image_cache, "decode", counting)
    return calls


def test_cache_hit_and_per_file_invalidation(tmp_path, rgb, monkeypatch):
    simple_folder(tmp_path, rgb)
    calls = count_decodes(monkeypatch)
    first = load(tmp_path)
    assert len(calls) == 14 and (tmp_path / ".fixmatch-cache").is_dir()
    calls.clear()
    again = load(tmp_path)
    assert calls == [] and torch.equal(again.x_unlabeled, first.x_unlabeled)
    changed = tmp_path / "unlabeled" / "d1" / "deeper" / "u3.png"
    put(changed, rgb[23])
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later mtime, as an edit leaves
    put(tmp_path / "unlabeled" / "new.png", rgb[22])
    d = load(tmp_path)
    assert sorted(calls) == ["new.png", "u3.png"]  # only the changed and the added file
    assert torch.equal(d.x_unlabeled[4], chw(rgb[23])) and torch.equal(d.x_unlabeled[-1], chw(rgb[22]))  # d1/../u3, new
    assert torch.equal(d.x_train, first.x_train)
    calls.clear()
    load(tmp_path, image_size=16)  # another resize setting: its own cache
    assert len(calls) == 15
    calls.clear()
    load(tmp_path)  # the 32 px cache is still there
    assert calls == []
    for f in (tmp_path / ".fixmatch-cache").glob("images-32px-*.npy"):  # damaged cache: rebuilt, not trusted
        f.write_bytes(f.read_bytes()[:100])
    assert torch.equal(load(tmp_path).x_unlabeled, d.x_unlabeled) and len(calls) == 15


def test_cache_outside_a_read_only_folder(tmp_path, rgb, monkeypatch):
    root = simple_folder(tmp_path / "data", rgb)
    (root / ".fixmatch-cache").write_text("not a folder")  # the cache folder cannot be created
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "usercache"))
    d = load(root)
    assert d.x_train.shape[0] == 6
    assert list((tmp_path / "usercache" / "fixmatch").glob("data-*/index-32px-3ch-v1.npz"))


def test_parallel_decode_equals_serial(tmp_path, rgb, faces, monkeypatch):
    paths = [str(put(tmp_path / f"{i}.png", rgb[i % 24] if i % 3 else faces[i % 12])) for i in range(40)]
    (tmp_path / "bad.png").write_bytes(b"")
    paths.insert(7, str(tmp_path / "bad.png"))
    serial = image_cache.decode_many(paths, 24, 3, workers=1)
    monkeypatch.setattr(image_cache, "POOL_MIN", 0)
    monkeypatch.setattr(image_cache, "CHUNK", 4)
    parallel = image_cache.decode_many(paths, 24, 3, workers=2)
    assert np.array_equal(serial[0], parallel[0]) and np.array_equal(serial[1], parallel[1])
    assert serial[2] == parallel[2] and not serial[1][7] and serial[2][7] == "empty file (0 bytes)"


def test_a_file_that_crashes_the_decoder_is_skipped(tmp_path, rgb, monkeypatch):
    """A decoder crash (a segfault in an image library) kills a worker process: the run neither hangs
    nor stops, and exactly that file is reported."""
    paths = [str(put(tmp_path / f"{i:02d}.png", rgb[i % 24])) for i in range(30)]
    real = image_cache.decode

    def crashing(path, size, channels):
        if path.endswith("17.png"):
            os._exit(1)  # what a segfault looks like to the pool
        return real(path, size, channels)

    monkeypatch.setattr(image_cache, "decode", crashing)
    monkeypatch.setattr(image_cache, "POOL_MIN", 0)
    monkeypatch.setattr(image_cache, "CHUNK", 4)
    images, ok, reasons = image_cache.decode_many(paths, 32, 3, workers=2)
    assert ok.tolist() == [i != 17 for i in range(30)] and "crashed the image decoder" in reasons[17]
    assert np.array_equal(images[3], chw(rgb[3]).numpy()) and np.array_equal(images[29], chw(rgb[5]).numpy())


# ---------------------------------------------------------------- memory, registry, worked example


def test_memory_helpers_and_check(tmp_path, rgb, monkeypatch):
    assert image_cache.uint8_bytes(100_000, 3, 32) == 307_200_000
    assert image_cache.largest_fitting_size(100_000, 3, 307_200_000) == 32
    assert image_cache.largest_fitting_size(100_000, 3, 307_199_999) == 31
    simple_folder(tmp_path, rgb)
    monkeypatch.setattr(user_folders, "available_ram", lambda: 40_000)  # 14 images x 2 x 3072 B do not fit
    # 90% of 40,000 B for 2 x 14 images x 3 channels: side floor(sqrt(36,000 / 84)) = 20
    with pytest.raises(UserError, match=r"need about 84.0 KiB of RAM.*39.1 KiB is available; --image-size 20 would"):
        load(tmp_path)
    monkeypatch.setattr(user_folders, "available_ram", lambda: 4_000)
    with pytest.raises(UserError, match=r"not even --image-size 8 fits"):
        load(tmp_path)


def test_registry_entry():
    import dataclasses

    from fixmatch.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(DATASETS["folders"].defaults) <= fields and set(DATASETS["stl10"].defaults) <= fields
    spec = DATASETS["folders"]
    assert spec.defaults["num_labels"] is None  # every labeled image is used
    assert spec.defaults["ema_warmup"] is True and spec.defaults["model"] == "cnn_small"


def test_worked_example_script(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("own_images", REPO / "examples" / "own_images.py")
    own_images = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(own_images)
    root = tmp_path / "digits_folders"
    own_images.main([str(root)])
    own_images.main([str(root)])  # a rerun replaces the folder it wrote itself
    d = load(root)
    assert d.x_train.shape == (20, 1, 8, 8) and d.x_unlabeled.shape == (1277, 1, 8, 8)
    assert d.x_test.shape == (500, 1, 8, 8) and len(d.skipped) == 4
    assert np.bincount(d.y_train.numpy()).tolist() == [2] * 10
    digits = load_dataset("digits")
    as_set = {bytes(x.numpy()) for x in digits.x_test}
    exact = sum(bytes(x.numpy()) in as_set for x in d.x_test)  # 8x8 PNGs and the padded 12x8 ones
    assert exact >= 300
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(SystemExit, match="not written by this script"):
        own_images.main([str(other)])
    assert (other / "keep.txt").exists()  # never deletes a folder it did not write


# ---------------------------------------------------------------- end to end through train()


def test_training_on_a_folder_with_broken_files_and_no_test(tmp_path, rgb):
    """A few steps through the real trainer: skipped files listed in the run, the evaluation named,
    class names in the checkpoint, every labeled image used."""
    from fixmatch.config import TrainConfig
    from fixmatch.training.checkpoint import load_checkpoint
    from fixmatch.training.train import train

    root = simple_folder(tmp_path / "data", rgb, test=False)
    (root / "unlabeled" / "zero.jpg").write_bytes(b"")
    (root / "unlabeled" / "notes.txt").write_text("no picture")
    lines = []
    s = train(
        TrainConfig(
            dataset="folders",
            data_dir=str(root),
            steps=4,
            eval_every=2,
            mu=2,
            batch_size=4,
            progress=False,
            out=str(tmp_path / "run"),
        ),
        log=lines.append,
    )
    run = tmp_path / "run"
    listed = (run / "skipped.txt").read_text().splitlines()
    assert sorted(Path(line.split("\t")[0]).name for line in listed) == ["notes.txt", "zero.jpg"]
    assert s["skipped_images"] == 2 and s["num_labels"] == 6
    assert s["evaluated_on"].startswith("no held-out images")
    assert any("no held-out images" in line for line in lines)
    meta = load_checkpoint(run / "last.pt")["meta"]
    assert meta["class_names"] == ["cat", "dog"] and meta["image_shape"] == [3, 32, 32]


def test_the_flip_of_a_folders_run_is_named_in_the_notes():
    """The folders default flips images; on digits it starves FixMatch (README's investigation), so
    the run's notes say so, and say nothing when --no-flip is given or the dataset is not folders."""
    from types import SimpleNamespace

    from fixmatch.training.train import run_notes

    data = SimpleNamespace(skipped=[], eval_note=None)

    def notes(**kw):
        return " ".join(run_notes(SimpleNamespace(ema_warmup=False, bn_momentum=0.001, **kw), data))

    assert "--no-flip" in notes(dataset="folders", flip=True)
    assert "--no-flip" not in notes(dataset="folders", flip=False)
    assert "--no-flip" not in notes(dataset="cifar10", flip=True)
