"""Output files: never one of the inputs, always written whole, and a full disk is one clear error.

Every file fixmatch writes goes through write_atomic: a temporary file in the same folder, then
os.replace, so a reader (or a kill, or a full disk) sees the old file or the new one, never half of
one; the temporary file is removed whatever happens. Torch-free: predict with an ONNX model uses it.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO, Callable

from fixmatch.errors import UserError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def check_output_file(path, flag: str) -> None:
    """An output file can be written there: not a folder, its folder exists and is writable."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name")
    if p.exists() and not p.is_file():  # /dev/stdout, /dev/full, a FIFO: written directly (write_atomic)
        if not os.access(p, os.W_OK):
            raise UserError(f"{flag} {path}: no permission to write there")
        return
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UserError(f"{flag} {path}: no permission to write there")


def same_file(a, b) -> bool:
    """Whether two paths name one file (links and relative spellings included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare where they would be
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_clobbering(outputs: list[tuple[str, object]], inputs: list[tuple[str, object]]) -> None:
    """Outputs (flag, path) that are an input (what, path) or each other: one UserError, before
    any work. Unset outputs (None) are left out."""
    outputs = [(flag, path) for flag, path in outputs if path]
    for i, (flag, path) in enumerate(outputs):
        check_output_file(path, flag)
        for what, source in inputs:
            if source and same_file(path, source):
                raise UserError(f"{flag} {path} is {what}: writing there would destroy it; choose another file")
        for other_flag, other in outputs[i + 1 :]:
            if same_file(path, other):
                raise UserError(f"{flag} and {other_flag} are the same file ({path}); give each its own")


def write_error(path, e: OSError) -> str:
    if e.errno in NO_SPACE:
        return f"disk full at {path}: nothing written there (free some space and run again)"
    return f"cannot write {path} ({e.strerror or e})"


def write_atomic(path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(f) on a temporary file next to `path`, then put it in place with os.replace.

    A new file gets the usual mode (0666 less the umask), an existing one keeps its own. A target
    that is not a regular file (/dev/stdout, a FIFO) is written directly: there is nothing to replace.
    A symbolic link is never followed to a file: os.replace puts the new file in the link's place and
    whatever it named stays as it was (a link planted in a cache folder must not make fixmatch
    overwrite the user's files). A link to a stream (/dev/stdout is one) is written through.
    Any OSError (a full disk above all) removes the temporary file and becomes one UserError."""
    path = Path(path)
    try:
        if path.exists() and not path.is_file() and not path.is_dir():  # a stream, or a link to one
            with open(path, "wb") as f:
                write(f)
            return
        existing = path.exists() and not path.is_symlink()  # a link's target lends it nothing, mode included
        mode = stat.S_IMODE(path.stat().st_mode) if existing else 0o666
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)  # the umask applies to a new file
    except OSError as e:
        raise UserError(write_error(path, e)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            if existing:
                os.chmod(f.fileno(), mode)  # the umask must not narrow an existing file's mode
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old or the new file, never half
    except OSError as e:
        raise UserError(write_error(path, e)) from None
    finally:
        tmp.unlink(missing_ok=True)


def printable(path) -> str:
    """A path for a message: a name that is not UTF-8 shows its odd bytes as \\xff escapes (printing
    the raw surrogates fails on a strict stream)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def write_text_atomic(path, text: str) -> None:
    """Text as UTF-8; file names that are not UTF-8 keep their own bytes (surrogateescape)."""
    write_atomic(path, lambda f: f.write(text.encode("utf-8", "surrogateescape")))
