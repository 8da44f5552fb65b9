"""Ctrl-C and SIGTERM act within a training step, not only after it. Python runs a signal's handler
(KeyboardInterrupt, or stopping.Stopped for SIGTERM) only when the interpreter runs Python code: the
forward pass does (every module's forward is Python), but backward runs wholly in torch's C++ engine,
so on a slow CPU a signal waited up to a whole backward pass (tens of seconds for a large batch). A
Python hook after each parameter's gradient gives the interpreter a moment between the layers of the
backward pass, so the signal acts within about a layer's time; it changes no number."""

from __future__ import annotations

import contextlib

from torch import nn


def let_signals_in() -> None:
    """Nothing: being Python code is its job (a pending signal's handler runs as it is entered)."""


@contextlib.contextmanager
def interruptible(*models: nn.Module):
    """Within: each backward pass of these models calls into Python after every parameter's gradient."""
    handles = [
        p.register_post_accumulate_grad_hook(lambda _: let_signals_in())
        for model in models
        for p in model.parameters()
        if p.requires_grad
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
