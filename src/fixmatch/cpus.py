"""How many CPU threads torch gets: `auto` (the default) = every CPU this process may use, or a number
the user gives. No torch here: --help and validation use it."""

from __future__ import annotations

import os

from fixmatch.errors import UserError

AUTO = "auto"
THREADS_HELP = (
    "CPU threads for torch: auto (every CPU this process may use) or N (fewer on a machine busy with other work)"
)


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS has one (a container's or
    taskset's limit), else every CPU of the machine."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def is_thread_setting(value) -> bool:
    """`auto`, or a positive whole number (an int, or its digits from the command line)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 1
    return isinstance(value, str) and (value == AUTO or (value.isdigit() and int(value) >= 1))


def thread_count(value) -> int:
    """The number of threads a setting means on this machine."""
    if not is_thread_setting(value):
        raise UserError(f"--threads must be {AUTO} or a positive integer, got {value!r}")
    return usable_cpus() if value == AUTO else int(value)
