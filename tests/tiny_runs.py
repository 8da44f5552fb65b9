"""Tiny digits runs for every test that trains: their config, a trainer built from it, and a run
killed right after a checkpoint, resumed, and compared with the same run uninterrupted."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from fixmatch.config import TrainConfig
from fixmatch.data import load_data
from fixmatch.training import engine
from fixmatch.training.resolve import resolve
from fixmatch.training.train import make_trainer, pick_labels, resume, train


def tiny_config(folder=None, **overrides) -> TrainConfig:
    """24 FixMatch steps on digits (B=8, mu=2), evaluated every 8, the run in folder/run; one thread (tiny
    tensors: more threads only contend with the other tests running beside them)."""
    base = dict(
        dataset="digits",
        algorithm="fixmatch",
        steps=24,
        eval_every=8,
        batch_size=8,
        mu=2,
        progress=False,
        seed=3,
        threads=1,
    )
    out = {} if folder is None else {"out": str(folder / "run")}
    return TrainConfig(**{**base, **out, **overrides})


def tiny_trainer(config: TrainConfig) -> tuple[engine.Trainer, object]:
    """(the trainer of this config on the CPU, its network initialised from torch seed 0; its data)."""
    cfg = resolve(config)
    data = load_data(cfg)
    torch.manual_seed(0)
    return make_trainer(cfg, data, pick_labels(cfg, data), torch.device("cpu")), data


COMPARED = ("accuracy", "median_last20", "raw_accuracy", "mask_rate", "pseudo_label_accuracy")


def kill_then_resume(config_in: Callable, tmp_path, monkeypatch, kill_at: int) -> tuple[dict, dict]:
    """config_in(folder) -> TrainConfig writing its run to folder/run. Trains it uninterrupted in a/,
    and in b/ until a KeyboardInterrupt at step `kill_at` (after that step's checkpoint), then resumes
    b/. Asserts the two summaries agree; returns both last.pt checkpoints (a, b)."""
    full = train(config_in(tmp_path / "a"), log=lambda *_: None)
    original = engine.Trainer.step

    def dying_step(self):
        if self.step_num == kill_at:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(engine.Trainer, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train(config_in(tmp_path / "b"), log=lambda *_: None)
    monkeypatch.setattr(engine.Trainer, "step", original)
    resumed = resume(tmp_path / "b" / "run", log=lambda *_: None)
    for key in COMPARED:
        assert resumed[key] == full[key], key
    return tuple(torch.load(tmp_path / x / "run" / "last.pt", weights_only=False) for x in "ab")
