"""A run top to bottom: its folder, resume after a kill, a longer schedule, a full disk, SIGTERM."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_runs import kill_then_resume, tiny_config

from fixmatch.cli import main
from fixmatch.config import TrainConfig
from fixmatch.errors import UserError
from fixmatch.training.train import resume, train


def test_train_writes_the_run_directory(tmp_path):
    summary = train(tiny_config(tmp_path), log=lambda *_: None)
    run = tmp_path / "run"
    for name in ("config.yaml", "split.json", "metrics.jsonl", "summary.json", "last.pt", "best.pt"):
        assert (run / name).exists(), name
    assert list((run / "tb").iterdir()), "tensorboard events"
    saved = json.loads((run / "summary.json").read_text())
    for key in ("dataset", "algorithm", "num_labels", "steps", "accuracy", "median_last20", "raw_accuracy", "seconds"):
        assert key in saved
    assert saved == summary
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [8, 16, 24]
    assert 0 <= saved["accuracy"] <= 1 and len(json.loads((run / "split.json").read_text())["labeled"]) == 20


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    a, b = kill_then_resume(tiny_config, tmp_path, monkeypatch, kill_at=16)  # killed right after the step-16 checkpoint
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    assert [r["step"] for r in b["history"]] == [8, 16, 24]


def test_a_run_folder_is_named_after_its_runs():
    import re

    from fixmatch.training.resolve import resolve
    from fixmatch.training.train import default_out

    demo = default_out(resolve(TrainConfig(dataset="digits")))  # the demo: a supervised baseline, then FixMatch
    single = default_out(resolve(TrainConfig(dataset="digits", algorithm="fixmatch")))
    assert demo.parent == single.parent == Path("runs")
    assert re.fullmatch(r"digits-20-supervised-vs-fixmatch-\d{8}-\d{6}", demo.name), demo.name
    assert re.fullmatch(r"digits-20-fixmatch-\d{8}-\d{6}", single.name), single.name


def test_resume_with_more_steps_says_what_the_cosine_does(tmp_path):
    train(tiny_config(tmp_path), log=lambda *_: None)
    said = []
    longer = resume(tmp_path / "run", {"steps": 32}, log=said.append)
    assert longer["steps"] == 32 and "the cosine's K follows (24 -> 32)" in said[0]
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ckpt["meta"]["config"]["lr_schedule_steps"] == 32


def test_out_that_cannot_be_a_run_directory_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    args = ["train", "--algorithm", "fixmatch", "--steps", "2", "--out"]
    assert main([*args, str(tmp_path / "a_file")]) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert main([*args, str(tmp_path / "a_file" / "run")]) == 2  # cannot be created (even by root)
    assert "cannot write the run directory" in capsys.readouterr().err


def test_a_full_disk_keeps_the_last_checkpoint_and_leaves_no_temporary_file(tmp_path):
    """A real write failure from the kernel (a file size limit: the file system refuses the write the
    way a full disk does) while a resumed run saves: exit 2 naming the file, last.pt unchanged, no
    temporary file left to keep the disk full, and the run resumes once there is room."""
    import os
    import resource
    import signal

    train(tiny_config(tmp_path, steps=8), log=lambda *_: None)
    run = tmp_path / "run"
    before = (run / "last.pt").read_bytes()
    assert len(before) > 100_000  # the limit below stops the checkpoint, not the small files

    def small_files_only():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, no signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    proc = subprocess.run(
        [sys.executable, "-m", "fixmatch", "train", "--resume", str(run), "--steps", "16", "--threads", "1"],
        capture_output=True,
        text=True,
        preexec_fn=small_files_only,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"cannot write {run / 'last.pt'} (File too large)" in proc.stderr and "Traceback" not in proc.stderr
    assert (run / "last.pt").read_bytes() == before
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []
    assert resume(run, {"steps": 16}, log=lambda *_: None)["steps"] == 16


def test_no_space_left_is_said_plainly(tmp_path, capsys):
    """ENOSPC itself (/dev/full refuses every write with it): "disk full at PATH", exit 2."""
    from fixmatch.outputs import write_text_atomic

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with pytest.raises(UserError, match="^disk full at /dev/full"):
        write_text_atomic("/dev/full", "x" * 100_000)


def test_sigterm_during_training_says_where_the_checkpoint_is(tmp_path):
    """A scheduler's SIGTERM: exit 143 with the signal named and the run's last.pt and --resume
    command given (it used to end silently)."""
    import signal
    import time

    run = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--algorithm", "fixmatch", "--steps", "100000", "--eval-every", "4",
            "--batch-size", "8", "--mu", "2", "--no-progress", "--threads", "1", "--out", str(run)]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "fixmatch", *argv], stderr=subprocess.PIPE, text=True)
    try:
        while not (run / "last.pt").exists():  # ready: the first checkpoint is written
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and str(run / "last.pt") in err and f"--resume {run}" in err, err
    assert "Traceback" not in err
