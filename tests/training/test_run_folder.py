"""A run folder belongs to one run: a folder holding a run is not replaced without --overwrite, a
second training into it is refused while the first lives, a dead one's lock is taken over, --out
stays out of the data and away from the --config file, --resume refuses to become another run,
writes never follow a link they did not make, and a killed writer's temporary files are removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from image_folders import small_folder
from tiny_runs import tiny_config

import fixmatch
from fixmatch.cli import main
from fixmatch.outputs import write_atomic
from fixmatch.training import engine, run_data, run_folder
from fixmatch.training.train import train


def digits_argv(out: Path, *more: str) -> list[str]:
    return ["train", "--dataset", "digits", "--algorithm", "fixmatch", "--steps", "4", "--eval-every", "2",
            "--batch-size", "4", "--mu", "1", "--no-progress", "--out", str(out), *more]  # fmt: skip


def snapshot(run: Path) -> dict:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


@pytest.fixture
def finished_run(tmp_path, capsys) -> Path:
    run = tmp_path / "run"
    assert main(digits_argv(run)) == 0
    capsys.readouterr()
    return run


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_folder_holding_a_run_is_refused_unless_overwrite_says_so(finished_run, capsys):
    before = snapshot(finished_run)
    assert main(digits_argv(finished_run, "--seed", "5")) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err and "Traceback" not in err
    assert snapshot(finished_run) == before  # last.pt, metrics.jsonl, config.yaml untouched

    (finished_run / "tb" / "stale-events").write_text("the old run's curves")
    assert main(digits_argv(finished_run, "--seed", "5", "--overwrite")) == 0
    out = capsys.readouterr().out
    assert "--overwrite: the run that was in" in out and "is replaced" in out
    assert (finished_run / "last.pt").read_bytes() != before["last.pt"]
    assert "seed: 5" in (finished_run / "config.yaml").read_text()
    assert not (finished_run / "tb" / "stale-events").exists()  # no mixed TensorBoard curves


def test_the_lock_holds_the_owner_while_it_trains_and_is_gone_after(tmp_path, monkeypatch):
    seen = []
    original = engine.Trainer.step

    def watching_step(self):
        seen.append(run_folder.read_owner(tmp_path / "run" / run_folder.LOCK_NAME))
        original(self)

    monkeypatch.setattr(engine.Trainer, "step", watching_step)
    train(tiny_config(tmp_path, steps=2, eval_every=2), log=lambda *_: None)
    assert seen == [os.getpid()] * 2
    assert not (tmp_path / "run" / run_folder.LOCK_NAME).exists()

    def dying_step(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.Trainer, "step", dying_step)  # an interrupted run releases it too
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "b", steps=2, eval_every=2), log=lambda *_: None)
    assert not (tmp_path / "b" / "run" / run_folder.LOCK_NAME).exists()


def test_a_second_training_into_a_live_run_folder_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / run_folder.LOCK_NAME).write_text(f"{os.getppid()}\n")  # a live process that is not this one
    for argv in (digits_argv(run), digits_argv(run, "--overwrite")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"in use by another training (process {os.getppid()})" in err and "Traceback" not in err
    assert sorted(p.name for p in run.iterdir()) == [run_folder.LOCK_NAME]  # nothing written
    assert run_folder.read_owner(run / run_folder.LOCK_NAME) == os.getppid()  # and the lock is still theirs


def test_a_dead_trainings_lock_is_taken_over_and_said(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    pid = dead_pid()
    (run / run_folder.LOCK_NAME).write_text(f"{pid}\n")
    assert main(digits_argv(run)) == 0
    assert f"taking over the lock of a training that is no longer running (process {pid})" in capsys.readouterr().out
    assert (run / "last.pt").is_file() and not (run / run_folder.LOCK_NAME).exists()


def test_two_trainings_started_together_leave_one_run(tmp_path):
    """Two processes into one --out: one trains, the other is refused with exit 2 (whichever)."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(fixmatch.__file__).parents[1])}  # the code under test
    argv = [sys.executable, "-m", "fixmatch", *digits_argv(run, "--steps", "40", "--eval-every", "20")]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read().decode()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _ in results)
    refused = [err for code, err in results if code == 2]
    assert codes == [0, 2], results  # one after the other or together: never two runs in one folder
    assert "in use by another training" in refused[0] or "already holds a run" in refused[0], refused[0]


def test_out_inside_the_data_folder_or_over_the_config_file_is_refused(tmp_path, capsys):
    data = small_folder(tmp_path / "data")
    before = sorted(str(p) for p in data.rglob("*"))
    for out in (data, data / "labeled" / "runs"):
        argv = [
            "train",
            "--dataset",
            "folders",
            "--data-dir",
            str(data),
            "--steps",
            "2",
            "--no-progress",
            "--out",
            str(out),
        ]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "a run writes checkpoints and logs there" in err and "Traceback" not in err, err
    assert sorted(str(p) for p in data.rglob("*") if ".fixmatch-cache" not in str(p)) == [
        p for p in before if ".fixmatch-cache" not in p
    ]

    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "config.yaml").write_text("# my settings\nseed: 4\n")
    assert main(["train", "--config", str(exp / "config.yaml"), *digits_argv(exp)[1:]]) == 2
    assert "it would be replaced" in capsys.readouterr().err
    assert (exp / "config.yaml").read_text() == "# my settings\nseed: 4\n"
    (exp / "mine.yaml").write_text("seed: 4\n")  # a config by another name sits beside the run safely
    assert main(["train", "--config", str(exp / "mine.yaml"), *digits_argv(tmp_path / "exp2")[1:]]) == 0


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--algorithm", "flexmatch"], "--algorithm flexmatch (the run has fixmatch)"),
        (["--algorithm", "freematch"], "--algorithm freematch"),
        (["--model", "wrn10_1"], "--model wrn10_1"),
        (["--num-labels", "100"], "--num-labels 100 (the run has 20)"),
        (["--fold", "2"], "--fold 2"),
        (["--overwrite"], "--overwrite"),
    ],
)
def test_resume_refuses_to_become_another_run_before_writing_anything(finished_run, capsys, flags, named):
    before = snapshot(finished_run)
    assert main(["train", "--resume", str(finished_run), "--steps", "6", *flags]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err, err
    assert snapshot(finished_run) == before  # config.yaml above all: not rewritten to the new options


def test_resume_continues_and_removes_a_killed_writers_temporary_files(finished_run, capsys):
    leftover = finished_run / "best.pt.0123abcd.tmp"
    leftover.write_bytes(b"half a checkpoint")
    assert main(["train", "--resume", str(finished_run), "--steps", "6"]) == 0
    assert "removed 1 unfinished temporary file" in capsys.readouterr().out
    assert not leftover.exists() and not list(finished_run.glob("*.tmp"))


class Arrays:
    """A dataset's arrays as run_data reads them."""

    def __init__(self, n: int):
        rng = np.random.default_rng(0)
        self.x_train = rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8)
        self.y_train = rng.integers(0, 3, n)
        self.x_test, self.y_test = self.x_train[:10].copy(), self.y_train[:10].copy()
        self.x_unlabeled = None
        self.class_names, self.image_shape = ["a", "b", "c"], (1, 4, 4)


class Labels(np.ndarray):
    def cpu(self):
        return self

    def numpy(self):
        return np.asarray(self)


def test_the_data_record_sees_one_changed_pixel_in_any_row():
    a, b = Arrays(1000), Arrays(1000)
    for d in (a, b):
        d.y_train, d.y_test = d.y_train.view(Labels), d.y_test.view(Labels)
    picked = set(np.linspace(0, 999, run_data.SAMPLED_ROWS).astype(np.int64).tolist())
    row = next(i for i in range(1000) if i not in picked)  # a row the old sampled fingerprint never read
    b.x_train[row, 0, 2, 2] ^= 1
    saved, now = run_data.describe("npz", a), run_data.describe("npz", b)
    assert saved["fingerprint"] == now["fingerprint"]  # the sample misses it
    assert run_data.differences(saved, now) == ["the same counts, but other images or labels"]
    assert run_data.differences(saved, run_data.describe("npz", a)) == []
    old_record = {k: v for k, v in saved.items() if k != "content_digest"}  # a run from before the digest
    assert run_data.differences(old_record, now) == []  # compared on what it has, not refused


def test_write_atomic_never_follows_a_link_to_a_file(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file")
    link = tmp_path / "index.npz"
    link.symlink_to(victim)
    write_atomic(link, lambda f: f.write(b"cache"))
    assert victim.read_text() == "the user's file"
    assert not link.is_symlink() and link.read_bytes() == b"cache"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere" / "new.txt")  # a link to a file that does not exist yet
    write_atomic(dangling, lambda f: f.write(b"x"))
    assert not (tmp_path / "nowhere").exists() and dangling.read_bytes() == b"x"


def test_a_link_planted_in_the_image_cache_does_not_redirect_the_write(tmp_path):
    from fixmatch.data import load_dataset

    data = small_folder(tmp_path / "data")
    load_dataset("folders", str(data))
    (index,) = (data / ".fixmatch-cache").glob("index-*.npz")
    for images in (data / ".fixmatch-cache").glob("images-*.npy"):
        images.unlink()  # the cache must be written again
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file")
    index.unlink()
    index.symlink_to(victim)
    load_dataset("folders", str(data))
    assert victim.read_text() == "the user's file"
    assert not index.is_symlink()
