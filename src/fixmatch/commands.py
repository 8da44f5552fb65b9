"""Commands the project prints for the user to run next, spelled so that they work as printed in a
fresh shell: inside a virtual environment that shell has not activated it, so the programs are named
by their path in the environment's bin/ folder (relative to the working folder when below it)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def program(name: str) -> str:
    """How to call the console program `name` (fixmatch, tensorboard, python) from a fresh shell."""
    bin_dir = Path(sys.executable).parent
    if sys.prefix == sys.base_prefix and shutil.which(name) == str(bin_dir / name):
        return name  # a system-wide install: on every shell's PATH
    path = bin_dir / name
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return relative if not relative.startswith("..") else str(path)
