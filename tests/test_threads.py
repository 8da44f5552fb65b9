"""--threads: every CPU this process may use unless the user says otherwise, in train, bench,
evaluate and predict alike; a bad value is one clear error."""

from __future__ import annotations

import os

import pytest
import torch
from tiny_runs import tiny_config

from fixmatch import cpus
from fixmatch.cli import build_parser, main
from fixmatch.config import TrainConfig
from fixmatch.errors import UserError
from fixmatch.training.bench import build_trainer
from fixmatch.training.bench_options import bench_args
from fixmatch.training.resolve import resolve
from fixmatch.training.train import train


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_usable_cpus_is_the_affinity_mask_where_there_is_one(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert cpus.usable_cpus() == 3  # a container or taskset limit, not the machine's 64
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    assert cpus.usable_cpus() == 64


@pytest.mark.parametrize("value, expected", [("auto", 7), (3, 3), ("2", 2), (1, 1)])
def test_a_thread_setting_means_a_count(monkeypatch, value, expected):
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 7)
    assert cpus.thread_count(value) == expected


@pytest.mark.parametrize("bad", [0, -1, "0", "two", "", 1.5, True, None])
def test_a_bad_thread_setting_is_one_clear_error(bad):
    with pytest.raises(UserError, match="auto or a positive integer"):
        cpus.thread_count(bad)
    with pytest.raises(UserError, match="threads must be (auto or a positive integer|str or int)"):
        resolve(TrainConfig(dataset="digits", threads=bad))


def test_every_command_defaults_to_auto():
    assert TrainConfig().threads == "auto"
    parser = build_parser()
    assert parser.parse_args(["evaluate", "--model", "fer2013"]).threads == "auto"
    assert parser.parse_args(["predict", "--model", "fer2013", "x.png"]).threads == "auto"
    assert parser.parse_args(["bench"]).threads == "auto"
    assert parser.parse_args(["train", "--threads", "3"]).threads == "3"


def test_training_uses_every_usable_cpu_by_default_and_the_users_count_when_given(
    tmp_path, monkeypatch, restore_threads
):
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 3)
    torch.set_num_threads(1)
    train(tiny_config(tmp_path / "a", threads="auto", steps=2, eval_every=2), log=lambda *_: None)
    assert torch.get_num_threads() == 3
    train(tiny_config(tmp_path / "b", threads=2, steps=2, eval_every=2), log=lambda *_: None)
    assert torch.get_num_threads() == 2
    assert "threads: auto" in (tmp_path / "a" / "run" / "config.yaml").read_text()  # a resume elsewhere: its cores


def test_bench_uses_every_usable_cpu_by_default(monkeypatch, restore_threads):
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 3)
    torch.set_num_threads(1)
    build_trainer(bench_args(model="cnn_small", batch_size=4, mu=1, device="cpu"))
    assert torch.get_num_threads() == 3


def test_evaluate_uses_every_usable_cpu_by_default(digits_model, monkeypatch, restore_threads, capsys):
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 3)
    torch.set_num_threads(1)
    assert main(["evaluate", "--checkpoint", str(digits_model["run"]), "--json"]) == 0
    assert torch.get_num_threads() == 3
    assert main(["evaluate", "--checkpoint", str(digits_model["run"]), "--json", "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1


def test_predict_uses_every_usable_cpu_by_default(digits_model, monkeypatch, restore_threads, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "x.png")
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 3)
    torch.set_num_threads(1)
    assert main(["predict", "--checkpoint", str(digits_model["run"]), str(tmp_path / "x.png")]) == 0
    assert torch.get_num_threads() == 3


def test_a_cpu_run_on_a_busy_machine_says_that_fewer_threads_may_be_faster(tmp_path, monkeypatch, restore_threads):
    import fixmatch.training.loop as loop

    monkeypatch.setattr(cpus, "usable_cpus", lambda: 2)
    monkeypatch.setattr(loop, "usable_cpus", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    said = []
    train(tiny_config(tmp_path / "a", threads="auto", steps=2, eval_every=2), log=said.append)
    assert any("load 3.0 on 2 CPUs" in str(x) and "--threads 1 may well be faster" in str(x) for x in said)
    said.clear()
    train(tiny_config(tmp_path / "b", threads=1, steps=2, eval_every=2), log=said.append)  # one thread: nothing to say
    assert not any("--threads 1 may" in str(x) for x in said)
