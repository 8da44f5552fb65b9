"""Hostile or broken model files and bad options: one clear error and exit 2, never a traceback,
and never code from inside a checkpoint."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
from serve_fixtures import encode

from fixmatch.cli import main


class CreatesAFile:
    """Unpickling this calls os.system: a checkpoint holding it would run a shell command when loaded."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.fixture
def evil_run(tmp_path):
    proof = tmp_path / "owned"
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": CreatesAFile(proof), "meta": {"config": {}}, "ema": {}}, run / "last.pt")
    return run, proof


def test_crafted_checkpoint_never_runs_code(evil_run, tmp_path, capsys):
    run, proof = evil_run
    image = tmp_path / "x.png"
    image.write_bytes(encode(np.zeros((48, 48), np.uint8), "PNG"))
    commands = [
        ["predict", "--checkpoint", str(run), str(image)],
        ["predict", "--checkpoint", str(run / "last.pt"), str(image)],
        ["evaluate", "--checkpoint", str(run)],
        ["export", "--checkpoint", str(run), "--onnx", str(tmp_path / "m.onnx")],
        ["train", "--resume", str(run)],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "refusing to load" in err and "could run code" in err, (argv, err)
        assert not proof.exists(), f"{argv} ran the checkpoint's code"
    pytest.importorskip("flask", reason="the serve extra is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["serve", "--workers", "2", "--model", str(run / "last.pt"), "--port", str(port)]) == 2
    assert "refusing to load" in capsys.readouterr().err and not proof.exists()


def test_checkpoint_whose_metadata_does_not_match_its_weights(fer_model, tmp_path, capsys):
    ckpt = torch.load(fer_model["checkpoint"], weights_only=True)  # real checkpoints load weights-only
    wrong = {**ckpt, "meta": {**ckpt["meta"], "num_classes": 5, "class_names": list("abcde")}}
    torch.save(wrong, tmp_path / "wrong.pt")
    no_ema = {k: v for k, v in ckpt.items() if k != "ema"}
    torch.save(no_ema, tmp_path / "no_ema.pt")
    image = tmp_path / "x.png"
    image.write_bytes(encode(np.zeros((48, 48), np.uint8), "PNG"))
    for name, words in (("wrong.pt", "does not match its weights"), ("no_ema.pt", "no 'ema' entry")):
        assert main(["predict", "--checkpoint", str(tmp_path / name), str(image)]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err


def test_export_refuses_outputs_it_cannot_write(fer_model, tmp_path, capsys):
    for target, words in ((tmp_path / "no" / "such" / "m.onnx", "does not exist"), (tmp_path, "is a folder")):
        assert main(["export", "--checkpoint", str(fer_model["checkpoint"]), "--onnx", str(target)]) == 2
        assert words in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(fer_model["checkpoint"]),
                "--onnx",
                str(tmp_path / "m.onnx"),
                "--card-json",
                str(tmp_path / "missing.json"),
            ]
        )
        == 2
    )
    assert "file not found" in capsys.readouterr().err
    assert main(["predict", "--model", str(fer_model["onnx"]), str(tmp_path), "--csv", str(tmp_path)]) == 2


def test_random_bytes_npz_is_named_plainly(fer_model, tmp_path, capsys):
    junk = tmp_path / "data.npz"
    junk.write_bytes(np.random.default_rng(0).bytes(4000))
    assert (
        main(["evaluate", "--checkpoint", str(fer_model["safetensors"]), "--dataset", "npz", "--data-dir", str(junk)])
        == 2
    )
    err = capsys.readouterr().err
    assert "not a readable .npz archive" in err and "allow_pickle" not in err


@pytest.fixture
def digits_files(digits_model, tmp_path):
    """A copy of the digits run (its last.pt may be destroyed by a failing test) and an 8x8 digit PNG."""
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(digits_model["run"] / "last.pt", run / "last.pt")
    image = tmp_path / "digit.png"
    image.write_bytes(encode((digits_model["x_test"][0, 0] * 16).clip(0, 255).astype(np.uint8), "PNG"))
    return run, image


def test_an_output_that_is_an_input_is_refused_before_any_work(digits_files, tmp_path, capsys, monkeypatch):
    from fixmatch import inference, predict

    run, image = digits_files
    ckpt = run / "last.pt"
    (tmp_path / "link.png").symlink_to(image)
    before = {p: p.read_bytes() for p in (ckpt, image)}

    def no_work(*_):
        raise AssertionError("loaded the model before refusing the output")

    monkeypatch.setattr(predict, "load", no_work)
    monkeypatch.setattr(inference, "load_model", no_work)
    cases = [
        (["predict", "--checkpoint", str(ckpt), str(image), "--csv", str(ckpt)], "is the model"),
        (["predict", "--checkpoint", str(run), str(image), "--csv", str(ckpt)], "is the model"),
        (["predict", "--checkpoint", str(ckpt), str(image), str(image), "--csv", str(image)], "is an input image"),
        (["predict", "--checkpoint", str(ckpt), str(tmp_path), "--csv", str(tmp_path / "link.png")], "is an input"),
        (["export", "--checkpoint", str(ckpt), "--onnx", str(ckpt)], "is the model"),
        (["export", "--checkpoint", str(run), "--safetensors", str(ckpt)], "is the model"),
        (
            ["export", "--checkpoint", str(ckpt), "--onnx", str(tmp_path / "m"), "--safetensors", str(tmp_path / "m")],
            "are the same file",
        ),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, (argv, err)
    assert {p: p.read_bytes() for p in (ckpt, image)} == before
    assert not (tmp_path / "m").exists()


def test_outputs_replace_a_file_whole_never_write_into_it(digits_files, tmp_path, capsys):
    """An existing output is replaced by a new file (rename), not truncated and rewritten: a hard link
    to the old file keeps its bytes, and no temporary file stays behind."""
    import os

    run, image = digits_files
    outputs = {"--csv": tmp_path / "out.csv", "--onnx": tmp_path / "m.onnx", "--safetensors": tmp_path / "m.st"}
    for flag, out in outputs.items():
        out.write_text("old")
        os.link(out, tmp_path / f"kept{out.suffix}")
    assert main(["predict", "--checkpoint", str(run), str(image), "--csv", str(outputs["--csv"])]) == 0
    argv = ["export", "--checkpoint", str(run), "--onnx", str(outputs["--onnx"])]
    assert main(argv + ["--safetensors", str(outputs["--safetensors"])]) == 0
    capsys.readouterr()
    for out in outputs.values():
        assert (tmp_path / f"kept{out.suffix}").read_text() == "old"
        assert out.read_bytes() != b"old"
    assert outputs["--csv"].read_text().startswith("path,label,confidence")
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name) == []


def test_csv_to_a_full_disk_is_one_clear_error(digits_files, capsys):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    run, image = digits_files
    assert main(["predict", "--checkpoint", str(run), str(image), "--csv", "/dev/full"]) == 2
    err = capsys.readouterr().err
    assert "disk full at /dev/full" in err and "Traceback" not in err
