"""Ctrl-C and SIGTERM act inside a CPU step's backward pass (where torch runs no Python of its own),
not only between steps: the loop lets the interpreter in after every parameter's gradient."""

from __future__ import annotations

import pytest
import torch
from tiny_runs import tiny_config

from fixmatch.models import build_model
from fixmatch.training import interrupts
from fixmatch.training.train import train


class Signal:
    """Stands for a signal's handler: raises KeyboardInterrupt on the n-th moment Python is let in."""

    def __init__(self, at: int):
        self.at, self.calls = at, 0

    def __call__(self):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt


def backward(model) -> None:
    torch.manual_seed(0)
    model(torch.randn(4, 3, 32, 32)).logsumexp(-1).sum().backward()


def test_a_signal_acts_in_the_middle_of_backward(monkeypatch):
    model = build_model("wrn10_1", 10, 3)
    params = [p for p in model.parameters() if p.requires_grad]
    monkeypatch.setattr(interrupts, "let_signals_in", Signal(at=3))
    with interrupts.interruptible(model), pytest.raises(KeyboardInterrupt):
        backward(model)
    done = sum(p.grad is not None for p in params)
    assert 3 <= done < len(params) // 2  # stopped after the third gradient, long before the end


def test_outside_the_context_backward_is_untouched(monkeypatch):
    model = build_model("wrn10_1", 10, 3)
    signal = Signal(at=1)
    monkeypatch.setattr(interrupts, "let_signals_in", signal)
    with interrupts.interruptible(model):
        pass
    backward(model)  # the hooks are gone
    assert signal.calls == 0 and all(p.grad is not None for p in model.parameters())


def test_the_gradients_are_the_same_with_the_hooks():
    a, b = build_model("wrn10_1", 10, 3), build_model("wrn10_1", 10, 3)
    b.load_state_dict(a.state_dict())
    backward(a)
    with interrupts.interruptible(b):
        backward(b)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa.grad, pb.grad)


def test_a_cpu_training_step_lets_signals_in(tmp_path, monkeypatch):
    monkeypatch.setattr(interrupts, "let_signals_in", Signal(at=1))
    with pytest.raises(KeyboardInterrupt) as e:
        train(tiny_config(tmp_path), log=lambda *_: None)
    assert e.value.run_dir == tmp_path / "run"  # type: ignore[attr-defined]  (the CLI names the checkpoint)
    assert not (tmp_path / "run" / "last.pt").exists()  # inside the first step, before any evaluation
