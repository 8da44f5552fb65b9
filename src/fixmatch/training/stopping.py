"""A run stopped by a signal (Ctrl-C, or SIGTERM from a scheduler or `kill`) says so, and where its
last checkpoint is, instead of ending silently; a closed output pipe (`predict | head`) ends quietly."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


class Stopped(KeyboardInterrupt):
    """A signal that stops the program; train() adds the run directory (`run_dir`)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_on_sigterm():
    """Within: SIGTERM raises Stopped in this process, so the CLI can say what happened (exit 143).
    A process forked from this one (an image decoder) still just dies of it. The previous handler
    is put back after. Not under torchrun: its SIGTERM tears down ranks that may sit in a
    collective, where a Python handler would wait for the collective's timeout instead of dying."""
    if "LOCAL_RANK" in os.environ:
        yield
        return
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_message(e: KeyboardInterrupt) -> tuple[str, int]:
    """What to tell the user and the exit status (128 + the signal, the shell's convention)."""
    signum = getattr(e, "signum", signal.SIGINT)
    name = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    run_dir = getattr(e, "run_dir", None)
    if run_dir is None:
        where = "the last checkpoint is intact; continue with --resume DIR"
    elif (Path(run_dir) / "last.pt").is_file():
        where = f"the last checkpoint is {Path(run_dir) / 'last.pt'}; continue with: fixmatch train --resume {run_dir}"
    else:
        where = f"no checkpoint in {run_dir} yet (stopped before the first evaluation)"
    return f"fixmatch: {name} ({where})", 128 + signum


def quiet_broken_pipe() -> int:
    """The reader of stdout went away (`| head`): point stdout at /dev/null so the interpreter's
    final flush cannot raise again, and exit as a process killed by SIGPIPE would (141)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    return 128 + signal.SIGPIPE
