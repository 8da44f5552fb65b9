"""Dataset readers: small files in the real on-disk formats, built from real pixels of the shared
offline copies, must load back exactly; missing/corrupt data must raise DataError naming the path."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import http.server
import io
import lzma
import pickle
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from shared_data import SHARED, cifar_images, fer_faces, needs_shared_data

from fixmatch.config import TrainConfig
from fixmatch.data import DATASETS, download, load_dataset
from fixmatch.data.splits import official_labeled_indices
from fixmatch.errors import DataError, UserError
from fixmatch.training.resolve import resolve
from fixmatch.training.train import pick_labels

pytestmark = needs_shared_data


@pytest.fixture(scope="module")
def rgb():
    """40 real CIFAR-10 images, (40, 32, 32, 3) uint8."""
    return cifar_images(40)


@pytest.fixture(scope="module")
def faces():
    """40 real FER2013 faces, (40, 48, 48) uint8 (fer2013.csv rows 0..39)."""
    return fer_faces(40)


def nchw(x):
    x = torch.from_numpy(np.asarray(x))
    return (x[..., None] if x.ndim == 3 else x).permute(0, 3, 1, 2)


def check(ds, x_train, y_train, x_test, y_test):
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    assert torch.equal(ds.x_train, nchw(x_train)) and torch.equal(ds.x_test, nchw(x_test))
    assert ds.y_train.tolist() == list(y_train) and ds.y_test.tolist() == list(y_test)


# ---------------------------------------------------------------- registry


def test_registry_defaults_are_config_fields():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in ("cifar10", "cifar100", "svhn", "fer2013", "npz", "imagefolder"):
        spec = DATASETS[name]
        assert set(spec.defaults) <= fields and spec.files and spec.description
    from fixmatch.config import PAPER_DEFAULTS
    from fixmatch.training.resolve import resolve

    for name, spec in DATASETS.items():  # a dataset states only where it departs from the paper recipe
        assert all(PAPER_DEFAULTS.get(k, object()) != v for k, v in spec.defaults.items()), name
    resolved = {name: resolve(TrainConfig(dataset=name)) for name in ("cifar10", "cifar100", "svhn", "fer2013")}
    assert (resolved["cifar10"].num_labels, resolved["cifar10"].model, resolved["cifar10"].steps) == (
        4000,
        "wrn28_2",
        2**20,
    )
    assert (resolved["cifar100"].model, resolved["cifar100"].weight_decay) == ("wrn28_8", 1e-3)
    assert resolved["svhn"].flip is False and resolved["svhn"].weight_decay == 5e-4
    assert (resolved["fer2013"].model, resolved["fer2013"].num_labels, resolved["fer2013"].flip) == (
        "wrn37_2",
        28709,
        True,
    )


# ---------------------------------------------------------------- CIFAR


def planar(x):
    """NHWC -> the CIFAR row format: 1024 red, 1024 green, 1024 blue bytes per image."""
    return x.transpose(0, 3, 1, 2).reshape(len(x), -1)


def write_cifar10(folder: Path, rgb):
    """5 train batches of 6 images, a test batch of 10, and batches.meta, as the original pickles."""
    folder.mkdir(parents=True)
    labels = [i % 10 for i in range(40)]
    for b in range(5):
        sl = slice(6 * b, 6 * b + 6)
        (folder / f"data_batch_{b + 1}").write_bytes(
            pickle.dumps({b"batch_label": b"x", b"data": planar(rgb[sl]), b"labels": labels[sl]}, protocol=2)
        )
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": planar(rgb[30:]), b"labels": labels[30:]}, protocol=2))
    names = [
        n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    ]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    return labels


def make_tar(src_folder: Path, archive: Path):
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src_folder, arcname=src_folder.name)
    return archive


def test_cifar10_folder_and_archive(tmp_path, rgb):
    labels = write_cifar10(tmp_path / "a" / "cifar-10-batches-py", rgb)
    ds = load_dataset("cifar10", tmp_path / "a", unknown_option=1)
    check(ds, rgb[:30], labels[:30], rgb[30:], labels[30:])
    assert ds.class_names[0] == "airplane" and ds.num_classes == 10 and ds.image_shape == (3, 32, 32)
    make_tar(tmp_path / "a" / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
    check(load_dataset("cifar10", str(tmp_path)), rgb[:30], labels[:30], rgb[30:], labels[30:])


def test_cifar100_folder_and_archive(tmp_path, rgb):
    folder = tmp_path / "a" / "cifar-100-python"
    folder.mkdir(parents=True)
    fine = [(7 * i) % 100 for i in range(40)]
    (folder / "train").write_bytes(
        pickle.dumps({b"data": planar(rgb[:30]), b"fine_labels": fine[:30], b"coarse_labels": [0] * 30})
    )
    (folder / "test").write_bytes(pickle.dumps({b"data": planar(rgb[30:]), b"fine_labels": fine[30:]}))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}))
    check(load_dataset("cifar100", tmp_path / "a"), rgb[:30], fine[:30], rgb[30:], fine[30:])
    make_tar(folder, tmp_path / "cifar-100-python.tar.gz")
    ds = load_dataset("cifar100", tmp_path)
    check(ds, rgb[:30], fine[:30], rgb[30:], fine[30:])
    assert ds.num_classes == 100 and ds.class_names[99] == "c99"


def test_cifar_missing_lists_layouts(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path)
    msg = str(e.value)
    for part in (str(tmp_path), "cifar-10-batches-py", "cifar-10-python.tar.gz", "cifar10_device.npz.xz", "--download"):
        assert part in msg


def test_missing_data_names_a_known_place_that_holds_it(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar10_device.npz.xz").write_bytes(b"")  # only its presence is looked at
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FIXMATCH_DATA", raising=False)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path / "empty")
    assert f"Found cifar10_device.npz.xz in {tmp_path / 'data'}: pass --data-dir {tmp_path / 'data'}" in str(e.value)
    with pytest.raises(DataError) as e:
        load_dataset("fer2013", tmp_path / "empty")
    assert f"in {tmp_path / 'data'}" not in str(e.value)  # ./data holds no FER2013 file


def test_cifar_corrupt_files_name_the_file(tmp_path, rgb):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, rgb)
    good = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"data_batch_3.*3072"):
        load_dataset("cifar10", tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": [1, 2], b"evil": Path("x")}))
    with pytest.raises(DataError, match="refusing"):  # pickles may only rebuild numpy arrays
        load_dataset("cifar10", tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"data_batch_3 is missing"):
        load_dataset("cifar10", tmp_path)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", tmp_path / "b")


def write_npz_xz(path: Path, **arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(lzma.compress(buf.getvalue(), preset=0))


def test_cifar10_offline_npz_xz(tmp_path, rgb):
    names = np.array(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])
    y = np.arange(40) % 3
    # device holds file indices 0..1 of each class, rest 2.., as in the shared copy; merged order is by class
    dev, rest = np.arange(40) < 20, np.arange(40) >= 20
    write_npz_xz(
        tmp_path / "cifar10_device.npz.xz",
        x_train=rgb[dev],
        y_train=y[dev],
        x_test=rgb[:5],
        y_test=y[:5],
        file_index_train=np.arange(20),
        class_names=names,
    )
    ds = load_dataset("cifar10", tmp_path)  # device file alone: a subset, with a warning
    assert len(ds.x_train) == 20
    write_npz_xz(
        tmp_path / "cifar10_rest.npz.xz",
        x_train=rgb[rest],
        y_train=y[rest],
        file_index_train=np.arange(20, 40),
        class_names=names,
    )
    order = np.lexsort((np.arange(40), y))
    check(load_dataset("cifar10", tmp_path), rgb[order], y[order], rgb[:5], y[:5])
    (tmp_path / "cifar10_rest.npz.xz").write_bytes(b"\xfd7zXZ\x00 broken")
    with pytest.raises(DataError, match="cifar10_rest.npz.xz"):
        load_dataset("cifar10", tmp_path)


# ---------------------------------------------------------------- downloads


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local folder served as the download mirror (file:// URL), checksums patched to match."""
    root = tmp_path / "mirror"
    root.mkdir()
    monkeypatch.setenv(download.MIRROR_ENV, root.as_uri())

    def publish(name: str, data: bytes):
        (root / name).write_bytes(data)
        monkeypatch.setitem(download.REMOTES, name, download.Remote("unused", hashlib.md5(data).hexdigest()))

    return publish


def test_cifar10_download_from_mirror(tmp_path, rgb, mirror):
    labels = write_cifar10(tmp_path / "src" / "cifar-10-batches-py", rgb)
    archive = make_tar(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "src" / "c.tar.gz")
    mirror("cifar-10-python.tar.gz", archive.read_bytes())
    data = tmp_path / "data"
    check(load_dataset("cifar10", data, download=True), rgb[:30], labels[:30], rgb[30:], labels[30:])
    assert sorted(p.name for p in data.iterdir()) == ["cifar-10-python.tar.gz"]


def test_download_checksum_mismatch_leaves_nothing(tmp_path, mirror, monkeypatch):
    mirror("cifar-10-python.tar.gz", b"payload")
    monkeypatch.setitem(download.REMOTES, "cifar-10-python.tar.gz", download.Remote("unused", "0" * 32))
    data = tmp_path / "data"
    with pytest.raises(DataError, match="md5"):
        load_dataset("cifar10", data, download=True)
    assert list(data.iterdir()) == []
    with pytest.raises(DataError, match="could not download"):
        download.download((tmp_path / "nope").as_uri(), data / "x", md5="0" * 32)
    assert list(data.iterdir()) == []


def test_download_over_http(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    payload = bytes(range(256)) * 5000
    (served / "f.bin").write_bytes(payload)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/f.bin"
        dest = download.download(url, tmp_path / "out" / "f.bin", sha256=hashlib.sha256(payload).hexdigest())
        assert dest.read_bytes() == payload
        with pytest.raises(DataError, match="sha256"):
            download.download(url, tmp_path / "out" / "g.bin", sha256="0" * 64)
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f.bin"]
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- SVHN


def save_mat(path: Path, x, y):
    from scipy.io import savemat

    savemat(path, {"X": np.ascontiguousarray(x.transpose(1, 2, 3, 0)), "y": np.asarray(y, np.uint8)[:, None]})


def test_svhn_mat_files_and_extra(tmp_path, rgb):
    y = np.arange(40) % 10 + 1  # SVHN labels 1..10, 10 meaning digit 0
    save_mat(tmp_path / "train_32x32.mat", rgb[:20], y[:20])
    save_mat(tmp_path / "test_32x32.mat", rgb[20:30], y[20:30])
    ds = load_dataset("svhn", tmp_path)
    check(ds, rgb[:20], y[:20] % 10, rgb[20:30], y[20:30] % 10)
    assert 0 in ds.y_train.tolist() and 10 not in ds.y_train.tolist()
    with pytest.raises(DataError, match="extra_32x32.mat"):
        load_dataset("svhn", tmp_path, svhn_extra=True)
    save_mat(tmp_path / "extra_32x32.mat", rgb[30:], y[30:])
    check(
        load_dataset("svhn", tmp_path, svhn_extra=True),
        rgb[np.r_[0:20, 30:40]],
        np.r_[y[:20], y[30:]] % 10,
        rgb[20:30],
        y[20:30] % 10,
    )
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(DataError, match="test_32x32.mat"):
        load_dataset("svhn", tmp_path)


def test_svhn_download_from_mirror(tmp_path, rgb, mirror):
    for name, sl in (("train_32x32.mat", slice(0, 20)), ("test_32x32.mat", slice(20, 30))):
        save_mat(tmp_path / name, rgb[sl], np.full(sl.stop - sl.start, 10))
        mirror(name, (tmp_path / name).read_bytes())
    ds = load_dataset("svhn", tmp_path / "data", download=True)
    assert ds.y_train.tolist() == [0] * 20 and torch.equal(ds.x_test, nchw(rgb[20:30]))


# ---------------------------------------------------------------- FER2013

USAGE = np.array(["Training"] * 24 + ["PublicTest"] * 8 + ["PrivateTest"] * 8)
FER_Y = np.arange(40) * 3 % 7


def write_fer_csv(path: Path, faces):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for x, y, u in zip(faces, FER_Y, USAGE):
            w.writerow([y, " ".join(map(str, x.ravel())), u])


def test_fer2013_csv(tmp_path, faces):
    write_fer_csv(tmp_path / "fer2013.csv", faces)
    tr, pub, priv = USAGE == "Training", USAGE == "PublicTest", USAGE == "PrivateTest"
    ds = load_dataset("fer2013", tmp_path)
    check(ds, faces[tr], FER_Y[tr], faces[priv], FER_Y[priv])
    assert ds.class_names == ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
    assert ds.image_shape == (1, 48, 48)
    check(load_dataset("fer2013", tmp_path, fer_test="public"), faces[tr], FER_Y[tr], faces[pub], FER_Y[pub])
    with pytest.raises(UserError, match="fer_test"):
        load_dataset("fer2013", tmp_path, fer_test="both")


def test_fer2013_csv_bad_row_names_file_and_line(tmp_path, faces):
    path = tmp_path / "fer2013.csv"
    write_fer_csv(path, faces)
    lines = path.read_text().splitlines()
    lines[5] = '4,"' + " ".join(["1"] * 2303) + '",Training'  # one pixel short
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"fer2013.csv, line 6.*2303 pixel"):
        load_dataset("fer2013", tmp_path)
    lines[5] = '9,"' + " ".join(["1"] * 2304) + '",Training'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 6"):
        load_dataset("fer2013", tmp_path)


def test_fer2013_kaggle_folders(tmp_path, faces):
    from PIL import Image

    expected = {"train": [], "test": []}
    for i, (x, y, u) in enumerate(zip(faces, FER_Y, USAGE)):
        split = "train" if u == "Training" else "test"
        folder = tmp_path / split / ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"][y]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(folder / f"{u}_{i:03d}.png")
        if u != "PublicTest":
            expected[split].append((folder.name, i))
    # the loader walks class folders alphabetically, files by name
    tr = [i for _, i in sorted(expected["train"])]
    te = [i for _, i in sorted(expected["test"])]
    check(load_dataset("fer2013", tmp_path), faces[tr], FER_Y[tr], faces[te], FER_Y[te])


def test_fer2013_offline_npz_xz(tmp_path, faces):
    usage = np.array([0, 1, 1, 0, 1])
    write_npz_xz(
        tmp_path / "fer2013.npz.xz",
        x_train=faces[:30, ..., None],
        y_train=FER_Y[:30],
        x_test=faces[30:35, ..., None],
        y_test=FER_Y[30:35],
        test_usage=usage.astype(np.uint8),
    )
    check(load_dataset("fer2013", tmp_path), faces[:30], FER_Y[:30], faces[[31, 32, 34]], FER_Y[[31, 32, 34]])
    check(
        load_dataset("fer2013", tmp_path, fer_test="public"), faces[:30], FER_Y[:30], faces[[30, 33]], FER_Y[[30, 33]]
    )


@pytest.mark.parametrize("download_flag", [False, True])
def test_fer2013_missing_says_where_to_get_it(tmp_path, download_flag):
    with pytest.raises(DataError) as e:
        load_dataset("fer2013", tmp_path, download=download_flag)
    msg = str(e.value)
    assert str(tmp_path / "fer2013.csv") in msg and "Kaggle" in msg and "Facial Expression Recognition" in msg


@pytest.mark.slow
def test_fer2013_shared_offline_copy(faces):
    ds = load_dataset("fer2013", SHARED)
    assert len(ds.x_train) == 28709 and len(ds.x_test) == 3589 and ds.image_shape == (1, 48, 48)
    assert torch.equal(ds.x_train[:40, 0], torch.from_numpy(faces))
    assert ds.y_train[:10].tolist() == [0, 0, 2, 4, 6, 2, 4, 3, 3, 2]  # the well-known head of fer2013.csv
    assert ds.y_test.bincount().tolist() == [491, 55, 528, 879, 594, 416, 626]  # PrivateTest


# ---------------------------------------------------------------- npz and imagefolder


def test_npz_file_and_folder(tmp_path, faces, rgb):
    np.savez(tmp_path / "d.npz", x_train=faces[:30], y_train=FER_Y[:30], x_test=faces[30:], y_test=FER_Y[30:])
    ds = load_dataset("npz", tmp_path / "d.npz")
    check(ds, faces[:30], FER_Y[:30], faces[30:], FER_Y[30:])
    assert ds.class_names == [str(i) for i in range(7)]
    other = tmp_path / "other"
    other.mkdir()
    np.savez(
        other / "e.npz",
        x_train=rgb[:30],
        y_train=np.zeros(30, int),
        x_test=rgb[30:],
        y_test=np.ones(10, int),
        class_names=np.array(["cat", "dog"]),
    )
    ds = load_dataset("npz", other)
    check(ds, rgb[:30], [0] * 30, rgb[30:], [1] * 10)
    assert ds.class_names == ["cat", "dog"]
    np.savez(other / "f.npz", x_train=rgb)
    with pytest.raises(DataError, match="2 .*npz"):
        load_dataset("npz", other)
    with pytest.raises(DataError, match=r"f\.npz lacks .*y_train"):
        load_dataset("npz", other / "f.npz")
    (other / "g.npz").write_bytes(b"PK\x03\x04 junk")
    with pytest.raises(DataError, match="g.npz"):
        load_dataset("npz", other / "g.npz")
    np.savez(other / "h.npz", x_train=rgb, y_train=np.arange(40.0), x_test=rgb, y_test=np.arange(40))
    with pytest.raises(DataError, match="integer"):
        load_dataset("npz", other / "h.npz")


def write_folder(root: Path, images, labels, classes, split):
    from PIL import Image

    for i, (x, y) in enumerate(zip(images, labels)):
        d = root / split / classes[y]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(d / f"{i:03d}.png")


def test_imagefolder_rgb_and_gray(tmp_path, rgb, faces):
    y = np.arange(40) % 3
    write_folder(tmp_path / "rgb", rgb[:30], y[:30], ["b", "a", "c"], "train")  # label 0 is folder "b"
    write_folder(tmp_path / "rgb", rgb[30:], y[30:], ["b", "a", "c"], "test")
    ds = load_dataset("imagefolder", tmp_path / "rgb")
    assert ds.class_names == ["a", "b", "c"]
    remap = np.array([1, 0, 2])[y]  # sorted folder names: a=0, b=1, c=2
    tr = np.argsort(remap[:30], kind="stable")
    te = 30 + np.argsort(remap[30:], kind="stable")
    check(ds, rgb[tr], remap[tr], rgb[te], remap[te])
    write_folder(tmp_path / "gray", faces[:10], [0] * 10, ["x", "y"], "train")
    write_folder(tmp_path / "gray", faces[10:20], [1] * 10, ["x", "y"], "train")
    write_folder(tmp_path / "gray", faces[20:], [1] * 20, ["x", "y"], "test")
    ds = load_dataset("imagefolder", tmp_path / "gray")
    assert ds.image_shape == (1, 48, 48)
    check(ds, faces[:20], [0] * 10 + [1] * 10, faces[20:], [1] * 20)


def test_imagefolder_errors_name_the_offender(tmp_path, rgb, faces):
    from PIL import Image

    with pytest.raises(DataError, match=str(tmp_path)):
        load_dataset("imagefolder", tmp_path)
    write_folder(tmp_path, rgb[:10], [0] * 10, ["a"], "train")
    write_folder(tmp_path, rgb[10:], [0] * 30, ["zz"], "test")
    with pytest.raises(DataError, match="zz"):
        load_dataset("imagefolder", tmp_path)
    (tmp_path / "test" / "zz").rename(tmp_path / "test" / "a")
    odd = tmp_path / "train" / "a" / "999.png"
    Image.fromarray(faces[0]).save(odd)  # 48x48 among 32x32 (and grey among RGB: converted, allowed)
    with pytest.raises(DataError, match=r"999\.png is 48x48"):
        load_dataset("imagefolder", tmp_path)
    odd.write_bytes(b"\x89PNG not an image")
    with pytest.raises(DataError, match=r"999\.png"):
        load_dataset("imagefolder", tmp_path)


# ---------------------------------------------------------------- data_dir default


def test_data_dir_defaults_to_env_then_dot_data(tmp_path, monkeypatch, faces):
    np.savez(tmp_path / "d.npz", x_train=faces[:4], y_train=[0, 1, 0, 1], x_test=faces[4:6], y_test=[1, 0])
    monkeypatch.setenv("FIXMATCH_DATA", str(tmp_path))
    assert len(load_dataset("npz").x_train) == 4
    monkeypatch.delenv("FIXMATCH_DATA")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="data"):
        load_dataset("npz")
    (tmp_path / "data").mkdir()
    (tmp_path / "d.npz").rename(tmp_path / "data" / "d.npz")
    assert len(load_dataset("npz").x_test) == 2


# ---------------------------------------------------------------- the official label splits
def create_split_reference(labels, size, seed):
    """scripts/create_split.py's loop, with numpy's global generator as the official code uses it."""
    class_id = [list(np.flatnonzero(labels == c)) for c in range(labels.max() + 1)]
    class_id = [np.array(ids, dtype=np.int64) for ids in class_id]
    stats = np.array([len(ids) for ids in class_id], np.float64)
    stats /= stats.max()
    if seed:
        np.random.seed(seed)
        for ids in class_id:
            np.random.shuffle(ids)
    npos, label = np.zeros(len(class_id), np.int64), []
    for _ in range(size):
        c = np.argmax(stats - npos / max(npos.max(), 1))
        label.append(class_id[c][npos[c]])
        npos[c] += 1
    return sorted(int(i) for i in label)


@pytest.mark.parametrize("seed", [0, 1, 3, 5])
def test_splits_are_the_official_create_split(seed):
    rng = np.random.RandomState(123)
    balanced = rng.permutation(np.repeat(np.arange(10), 50))
    skewed = rng.choice(10, 3000, p=np.array([1, 9, 7, 6, 5, 5, 4, 4, 3, 3]) / 47)  # SVHN-like frequencies
    for labels, size in ((balanced, 40), (balanced, 250), (balanced, 37), (skewed, 250), (skewed, 1000)):
        got = official_labeled_indices(labels, size, seed)
        assert got.tolist() == create_split_reference(labels, size, seed), (size, seed)
    if seed == 0:  # no shuffle: the first images of each class in record order
        got = official_labeled_indices(balanced, 40, 0)
        assert got.tolist() == sorted(i for c in range(10) for i in np.flatnonzero(balanced == c)[:4])
    assert np.bincount(balanced[official_labeled_indices(balanced, 250, seed)]).tolist() == [25] * 10
    counts = np.bincount(skewed[official_labeled_indices(skewed, 1000, seed)], minlength=10)
    assert np.abs(counts / 1000 - np.bincount(skewed) / 3000).max() < 0.01  # proportional


def test_fold_selects_the_split_and_seed_does_not():
    data = load_dataset("digits")
    a = pick_labels(resolve(TrainConfig(fold=2, seed=0)), data)
    assert a.tolist() == pick_labels(resolve(TrainConfig(fold=2, seed=9)), data).tolist()
    assert a.tolist() != pick_labels(resolve(TrainConfig(fold=3)), data).tolist()
    assert a.tolist() == create_split_reference(data.y_train.numpy(), 20, 2)


def test_split_errors_are_clear():
    labels = np.concatenate([np.zeros(3, int), np.ones(40, int)])
    assert np.bincount(labels[official_labeled_indices(labels, 43, seed=1)]).tolist() == [3, 40]
    with pytest.raises(UserError, match="exceeds"):
        official_labeled_indices(labels, 44, seed=1)
