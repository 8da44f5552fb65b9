"""Hostile or broken model files and bad options: one clear error and exit 2, never a traceback,
and never code from inside a checkpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from serve_fixtures import encode

from fixmatch.cli import main
from fixmatch.errors import UserError
from fixmatch.training.checkpoint import save_atomic


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
    no_ema = {k: v for k, v in ckpt.items() if k not in ("ema", "tensors_sha256")}  # written so, not damaged
    save_atomic(no_ema, tmp_path / "no_ema.pt")
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
    from fixmatch.inference import loading as inference
    from fixmatch.inference import predict

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
    named = outputs["--csv"].read_bytes()
    (tmp_path / "link.csv").symlink_to(outputs["--csv"])  # a link is replaced, never followed to a file
    assert main(["predict", "--checkpoint", str(run), str(image), str(image), "--csv", str(tmp_path / "link.csv")]) == 0
    assert not (tmp_path / "link.csv").is_symlink() and len((tmp_path / "link.csv").read_text().splitlines()) == 3
    assert outputs["--csv"].read_bytes() == named
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name) == []


def test_csv_to_a_full_disk_is_one_clear_error(digits_files, capsys):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    run, image = digits_files
    assert main(["predict", "--checkpoint", str(run), str(image), "--csv", "/dev/full"]) == 2
    err = capsys.readouterr().err
    assert "disk full at /dev/full" in err and "Traceback" not in err


def rewrite_safetensors(src, dst, edit_header=lambda h: None, cut: int = 0) -> None:
    """Copy a .safetensors file with its JSON header edited in place and `cut` bytes off its end."""
    import json
    import struct

    data = src.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    edit_header(header)
    head = json.dumps(header).encode()
    dst.write_bytes(struct.pack("<Q", len(head)) + head + data[8 + length : len(data) - cut])


def shift_last_tensor(header, by=400):
    name = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    header[name]["data_offsets"] = [v + by for v in header[name]["data_offsets"]]


def edit_onnx(src, dst, edit) -> None:
    import onnx

    model = onnx.load(str(src))
    edit(model)
    onnx.save(model, str(dst))


def set_onnx_meta(model, **changes):
    import json

    prop = next(p for p in model.metadata_props if p.key == "fixmatch")
    prop.value = json.dumps({**json.loads(prop.value), **changes})


def drop_probabilities(model):
    """A graph without the output, its checksum recomputed: a file consistent in itself."""
    from fixmatch.inference.model_files import onnx_graph_digest

    kept = [o for o in model.graph.output if o.name != "probabilities"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    set_onnx_meta(model, weights_sha256=onnx_graph_digest(model.graph))


@pytest.fixture
def crafted_models(digits_files, digits_model, tmp_path):
    """{file: words of its error}: damaged exports and checkpoints whose metadata lies, each made here."""
    from fixmatch.inference.loading import load_model, write_safetensors

    run, _ = digits_files
    good = tmp_path / "good.safetensors"
    write_safetensors(load_model(str(run)), good)
    made = {}
    rewrite_safetensors(good, tmp_path / "truncated.safetensors", cut=1000)
    made[tmp_path / "truncated.safetensors"] = "damaged or truncated"
    rewrite_safetensors(good, tmp_path / "past_end.safetensors", shift_last_tensor)
    made[tmp_path / "past_end.safetensors"] = "damaged or truncated"
    onnx_cases = {
        "no_output.onnx": (drop_probabilities, "no 'probabilities' output"),
        "other_shape.onnx": (lambda m: set_onnx_meta(m, image_shape=[1, 16, 16]), "its graph takes"),
        "more_classes.onnx": (
            lambda m: set_onnx_meta(m, num_classes=11, class_names=[str(i) for i in range(11)]),
            "scores but its metadata names 11 classes",
        ),
    }
    onnx_cases["nan_weights.onnx"] = (nan_onnx_weight, "weights are not finite numbers")
    for name, (edit, words) in onnx_cases.items():
        edit_onnx(digits_model["onnx"], tmp_path / name, edit)
        made[tmp_path / name] = words
    ckpt = torch.load(run / "last.pt", weights_only=True)
    names = [str(i) for i in range(10)]
    pt_cases = {
        "fewer_names.pt": ({"class_names": names[:9]}, "names 9 classes but says num_classes=10"),
        "meta_string.pt": ("a string", "not a mapping"),
        "dict_name.pt": ({"class_names": [{"a": 1}, *names[1:]]}, "class names must be strings"),
        "twice.pt": ({"class_names": ["0", *names[:9]]}, "class names repeat (0)"),
        "zero_std.pt": ({"std": [0.0]}, "bad std [0.0]"),
        "nan_mean.pt": ({"mean": [float("nan")]}, "bad mean"),
    }
    for name, (change, words) in pt_cases.items():
        meta = change if isinstance(change, str) else {**ckpt["meta"], **change}
        torch.save({**ckpt, "meta": meta}, tmp_path / name)
        made[tmp_path / name] = words
    nan_weights = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v for k, v in ckpt["ema"].items()}
    unchecked = {k: v for k, v in ckpt.items() if k != "tensors_sha256"}
    save_atomic({**unchecked, "ema": nan_weights}, tmp_path / "nan_weights.pt")  # sealed with its NaNs
    made[tmp_path / "nan_weights.pt"] = "weights are not finite numbers"
    rewrite_safetensors(good, tmp_path / "nan_weights.safetensors")
    nan_safetensors_weight(tmp_path / "nan_weights.safetensors")
    made[tmp_path / "nan_weights.safetensors"] = "weights are not finite numbers"
    return made


def nan_onnx_weight(model):
    """One float initializer made NaN, and the checksum recomputed: the file is consistent, its numbers not."""
    from onnx import numpy_helper

    from fixmatch.inference.model_files import onnx_graph_digest

    init = next(t for t in model.graph.initializer if numpy_helper.to_array(t).dtype == np.float32)
    values = numpy_helper.to_array(init).copy()
    values.flat[0] = np.nan
    init.CopyFrom(numpy_helper.from_array(values, init.name))
    set_onnx_meta(model, weights_sha256=onnx_graph_digest(model.graph))


def nan_safetensors_weight(path):
    """One F32 weight of a .safetensors export made +inf, and the checksum in its metadata recomputed."""
    import hashlib
    import json
    import struct

    data = bytearray(path.read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    name = next(k for k, t in header.items() if k != "__metadata__" and t["dtype"] == "F32")
    at = 8 + length + header[name]["data_offsets"][0]
    data[at : at + 4] = struct.pack("<f", float("inf"))
    meta = json.loads(header["__metadata__"]["fixmatch"])
    meta["weights_sha256"] = hashlib.sha256(bytes(data[8 + length :])).hexdigest()
    header["__metadata__"]["fixmatch"] = json.dumps(meta)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + bytes(data[8 + length :]))


def test_damaged_or_inconsistent_model_files_are_refused_up_front(crafted_models, digits_files, capsys):
    """predict: exit 2 with the reason; serve: check_model (run before any worker forks) refuses the
    same file, so no worker dies booting it."""
    from fixmatch.inference.predictor import check_model

    _, image = digits_files
    wrong = {}
    for path, words in crafted_models.items():
        try:
            code = main(["predict", "--checkpoint", str(path), str(image)])
        except Exception as e:
            code = f"raised {type(e).__name__}"
        out = capsys.readouterr()
        if code != 2 or words not in out.err or out.out:
            wrong[path.name] = f"predict: {code} {out.err[-200:]!r}"
        try:
            check_model(str(path))
            wrong[path.name + " (serve)"] = "check_model accepted it"
        except UserError as e:
            if words not in str(e):
                wrong[path.name + " (serve)"] = str(e)
        except Exception as e:
            wrong[path.name + " (serve)"] = f"raised {type(e).__name__}"
    assert wrong == {}


def test_a_model_declaring_a_huge_input_is_refused_before_any_allocation(digits_files, tmp_path):
    """image_shape [1, 60000, 60000] once grew predict to 22 GB: refused from the metadata alone.
    Run in a child with its address space capped, so a regression fails here instead of exhausting
    the machine's memory."""
    import resource
    import subprocess
    import sys

    run, image = digits_files
    ckpt = torch.load(run / "last.pt", weights_only=True)
    torch.save({**ckpt, "meta": {**ckpt["meta"], "image_shape": [1, 60000, 60000]}}, tmp_path / "huge.pt")
    cap = 8 * 2**30

    proc = subprocess.run(
        [sys.executable, "-m", "fixmatch", "predict", "--checkpoint", str(tmp_path / "huge.pt"), str(image)],
        capture_output=True,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)),
        timeout=600,
    )
    assert proc.returncode == 2 and "declares 60000x60000 input images" in proc.stderr, proc.stderr[-2000:]


def tensor_bytes_span(path) -> tuple[int, int]:
    """Where the largest tensor's bytes lie in a .pt, .safetensors or .onnx file."""
    import struct
    import zipfile

    raw = path.read_bytes()
    if path.suffix == ".pt":  # a zip: the largest member, after its local header
        with zipfile.ZipFile(path) as z:
            info = max(z.infolist(), key=lambda i: i.file_size)
        name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
        start = info.header_offset + 30 + name_len + extra_len
        return start, start + info.file_size
    if path.suffix == ".safetensors":
        (length,) = struct.unpack("<Q", raw[:8])
        return 8 + length, len(raw)
    import onnx

    weights = max(onnx.load(str(path)).graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    start = raw.find(weights)
    return start, start + len(weights)


def test_a_model_file_damaged_on_disk_is_refused(digits_files, digits_model, tmp_path, capsys):
    """64 random bytes overwritten in the middle of the weights of each kind of model file: the
    checksum written with them says so (exit 2; serve's check refuses it too)."""
    import shutil

    from fixmatch.inference.loading import load_model, write_safetensors
    from fixmatch.inference.predictor import check_model

    run, image = digits_files
    files = [run / "last.pt", tmp_path / "m.safetensors", tmp_path / "m.onnx"]
    write_safetensors(load_model(str(run)), files[1])
    shutil.copy(digits_model["onnx"], files[2])
    for path in files:
        start, end = tensor_bytes_span(path)
        assert end - start > 1000, path
        data = bytearray(path.read_bytes())
        middle = (start + end) // 2
        data[middle : middle + 64] = np.random.default_rng(0).bytes(64)
        path.write_bytes(bytes(data))
        assert main(["predict", "--checkpoint", str(path), str(image)]) == 2, path.name
        out = capsys.readouterr()
        assert "is damaged" in out.err and out.out == "", (path.name, out.err)
        with pytest.raises(UserError, match="is damaged"):
            check_model(str(path))


def test_a_checkpoint_without_its_checksum_is_refused_until_the_user_reseals_it(digits_files, tmp_path, capsys):
    """Deleting the checksum must not let altered weights load: the file is refused, with the one
    command that seals a copy of a file the user trusts; the sealed copy then loads."""
    run, image = digits_files
    ckpt = torch.load(run / "last.pt", weights_only=True)
    altered = {k: v for k, v in ckpt.items() if k != "tensors_sha256"}
    altered["ema"] = {k: v + 1 if v.is_floating_point() else v for k, v in altered["ema"].items()}
    torch.save(altered, tmp_path / "old.pt")
    assert main(["predict", "--checkpoint", str(tmp_path / "old.pt"), str(image)]) == 2
    err = capsys.readouterr().err
    assert "carries no checksum" in err and f"--checkpoint {tmp_path / 'old.pt'} --reseal" in err, err
    sealed = tmp_path / "sealed.pt"
    assert main(["export", "--checkpoint", str(tmp_path / "old.pt"), "--reseal", str(sealed)]) == 0
    assert main(["export", "--checkpoint", str(tmp_path / "old.pt"), "--reseal", str(tmp_path / "old.pt")]) == 2
    assert main(["predict", "--checkpoint", str(sealed), str(image)]) == 0
    capsys.readouterr()
    assert torch.equal(torch.load(sealed, weights_only=True)["ema"]["fc.weight"], altered["ema"]["fc.weight"])


def run_cli(argv, **kw) -> subprocess.CompletedProcess:
    """fixmatch in a child process (what a hang or a pipe needs), with a deadline."""
    return subprocess.run([sys.executable, "-m", "fixmatch", *argv], text=True, timeout=300, **kw)


def test_a_fifo_is_never_opened(digits_files, digits_model, tmp_path):
    """A named pipe given as an image, a model or a card would block forever waiting for a writer."""
    run, image = digits_files
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    proc = run_cli(["predict", "--model", str(digits_model["onnx"]), str(image), str(fifo)], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    rows = {r["path"]: r for r in json.loads(proc.stdout)}
    assert rows[str(fifo)]["error"].startswith("not a regular file") and "label" in rows[str(image)]
    for argv in (
        ["predict", "--checkpoint", str(fifo), str(image)],
        ["export", "--checkpoint", str(run), "--onnx", str(tmp_path / "m.onnx"), "--card-json", str(fifo)],
    ):
        proc = run_cli(argv, capture_output=True)
        assert proc.returncode == 2 and "not a regular file" in proc.stderr, (argv, proc.stderr)


def test_predict_into_a_closed_pipe_ends_quietly(digits_model, digits_files):
    """`fixmatch predict ... | head -c 10`: the reader is gone; no BrokenPipeError traceback."""
    _, image = digits_files
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has already gone
    try:
        proc = run_cli(
            ["predict", "--model", str(digits_model["onnx"]), str(image)], stdout=write_end, stderr=subprocess.PIPE
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


def test_written_files_get_the_usual_permissions(digits_files, tmp_path, capsys):
    """0666 less the umask for every output, as any other program's files (the .safetensors export
    was 0600: unreadable by the web server's user)."""
    run, image = digits_files
    old = os.umask(0o022)
    try:
        assert main(["export", "--checkpoint", str(run), "--onnx", str(tmp_path / "m.onnx"),
                     "--safetensors", str(tmp_path / "m.safetensors")]) == 0  # fmt: skip
        assert main(["predict", "--checkpoint", str(run), str(image), "--csv", str(tmp_path / "p.csv")]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    modes = {name: oct((tmp_path / name).stat().st_mode & 0o777) for name in ("m.onnx", "m.safetensors", "p.csv")}
    assert modes == dict.fromkeys(modes, oct(0o644))
    (tmp_path / "p.csv").chmod(0o600)  # a file made private stays private when replaced
    assert main(["predict", "--checkpoint", str(run), str(image), "--csv", str(tmp_path / "p.csv")]) == 0
    assert (tmp_path / "p.csv").stat().st_mode & 0o777 == 0o600


def test_an_export_without_its_checksum_is_refused(digits_model, tmp_path, capsys):
    """Deleting an export's checksum must not let altered weights load: refused, saying how to export
    it again (serve's up-front check refuses it too)."""
    from fixmatch.inference.predictor import check_model

    def drop_checksum(model):
        import json

        prop = next(p for p in model.metadata_props if p.key == "fixmatch")
        prop.value = json.dumps({k: v for k, v in json.loads(prop.value).items() if k != "weights_sha256"})

    edit_onnx(digits_model["onnx"], tmp_path / "unsealed.onnx", drop_checksum)
    image = tmp_path / "x.png"
    image.write_bytes(encode(np.zeros((8, 8), np.uint8), "PNG"))
    assert main(["predict", "--checkpoint", str(tmp_path / "unsealed.onnx"), str(image)]) == 2
    assert "carries no checksum of its weights" in capsys.readouterr().err
    with pytest.raises(UserError, match="carries no checksum"):
        check_model(str(tmp_path / "unsealed.onnx"))


def test_export_needs_no_temporary_folder(digits_files, tmp_path, capsys, monkeypatch):
    """A full TMPDIR (or ulimit -f) once stopped `export --onnx` with an ENOSPC traceback: the graph was
    built in a temporary folder outside the write's error handling. It is built in memory now."""
    import errno
    import tempfile

    def full(*_, **__):
        raise OSError(errno.ENOSPC, "No space left on device")

    for name in ("mkdtemp", "mkstemp", "NamedTemporaryFile", "TemporaryFile", "TemporaryDirectory"):
        monkeypatch.setattr(tempfile, name, full)
    run, _ = digits_files
    assert main(["export", "--checkpoint", str(run), "--onnx", str(tmp_path / "m.onnx")]) == 0
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "m.onnx"), str(digits_files[1])]) == 0


def test_a_file_that_is_no_checkpoint_is_named_so_not_suspected_of_running_code(digits_model, tmp_path, capsys):
    """An .onnx export or a README where a checkpoint is expected: 'not a fixmatch checkpoint', never
    'loading it could run code' (which is for pickles holding more than data)."""
    readme = tmp_path / "README.md"
    readme.write_text("# notes\n")
    renamed = tmp_path / "model.pt"
    renamed.write_bytes(digits_model["onnx"].read_bytes())
    image = tmp_path / "x.png"
    image.write_bytes(encode(np.zeros((8, 8), np.uint8), "PNG"))
    cases = [
        (["predict", "--checkpoint", str(renamed), str(image)], "is not a fixmatch checkpoint"),
        (["evaluate", "--checkpoint", str(renamed)], "is not a fixmatch checkpoint"),
        (["serve", "--model", str(readme)], "is not a fixmatch checkpoint"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert words in err and "could run code" not in err and "Traceback" not in err, (argv, err)
