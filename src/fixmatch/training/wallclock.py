"""When the command started, as a user's stopwatch sees it: `--time-budget` counts from there, the
interpreter's start-up, the imports and the data loading included. No torch here (the CLI imports it)."""

from __future__ import annotations

import os
import time

# A process older than this at the command's start is not a fresh `fixmatch` command (a test runner or
# a notebook calling the CLI's main): its own start is not the command's, so the command's is now.
FRESH_PROCESS_S = 60.0


def process_age() -> float | None:
    """Seconds since this process started, from the OS (Linux's /proc); None where it cannot say."""
    try:
        with open("/proc/self/stat") as f:
            after_name = f.read().rsplit(")", 1)[1].split()  # the name may hold spaces and parentheses
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        start_ticks = int(after_name[19])  # field 22, starttime: clock ticks after boot
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def command_start() -> float:
    """The command's start on the time.perf_counter() clock: the process's start when this process
    is the command, else now."""
    now, age = time.perf_counter(), process_age()
    return now - age if age is not None and age < FRESH_PROCESS_S else now
