"""A run folder belongs to one run: claimed before anything is written there, released at the end.

The claim is a lock file holding the owner's pid, created with O_EXCL. A second training into the
same folder is refused while the owner lives; a lock left by a process that died (kill -9, a power
cut) is taken over, and the log says so. A folder that already holds a run is refused unless the
run is being resumed or --overwrite replaces it. The temporary files a killed writer left
(outputs.write_atomic's NAME.<hex>.tmp) are removed once the folder is ours.

Claims are serialised by an flock on the folder itself, so two processes that find the same stale
lock cannot both take it over. POSIX only (fcntl), like the rest of the training stack.
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import shutil
from pathlib import Path

from fixmatch.data import get_spec
from fixmatch.data.download import resolve_data_dir
from fixmatch.errors import UserError
from fixmatch.outputs import printable

LOCK_NAME = ".fixmatch-run.lock"
RUN_MARKERS = ("last.pt", "best.pt", "metrics.jsonl", "config.yaml", "summary.json")  # a run was here
RUN_FILES = (*RUN_MARKERS, "split.json", "skipped.txt", "cta.json")  # what a run writes (and --overwrite removes)
RUN_FOLDERS = ("tb",)  # TensorBoard's event files: two runs' files in one folder mix their curves
LEFTOVER = re.compile(r".+\.[0-9a-f]{8}\.tmp$")  # write_atomic's temporary name

_held: list[RunFolder] = []  # claims of this process, newest last (released by @releases_claims)


class RunFolder:
    def __init__(self, path: Path, lock: Path):
        self.path, self.lock = path, lock

    def release(self) -> None:
        with folder_mutex(self.path):
            if read_owner(self.lock) == os.getpid():
                self.lock.unlink(missing_ok=True)
        if self in _held:
            _held.remove(self)


def releases_claims(fn):
    """Release every claim `fn` makes when it returns or raises (a Ctrl-C, an error), so that a
    failed call in a notebook does not keep the folder locked for the life of the process."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        mark = len(_held)
        try:
            return fn(*args, **kwargs)
        finally:
            while len(_held) > mark:
                _held[-1].release()

    return wrapper


class folder_mutex:
    """An exclusive flock on the folder for the few system calls of a claim or a release."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDONLY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing drops the flock


def read_owner(lock: Path) -> int | None:
    """The pid in a lock file (None: no lock, or one that holds no pid: a writer killed mid-write)."""
    try:
        text = lock.read_text(errors="replace").split()
    except FileNotFoundError:
        return None
    return int(text[0]) if text and text[0].isdigit() else None


def alive(pid: int, lock: Path) -> bool:
    if pid == os.getpid():  # this process: held only while that claim of ours is open
        return any(held.lock == lock for held in _held)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def claim_for(cfg, out_dir, *, resume: bool, log=print) -> RunFolder:
    """claim() for a training config: its --overwrite, its data folder as the input to stay out of."""
    return claim(out_dir, resume=resume, overwrite=cfg.overwrite, inputs=[data_folder(cfg)], log=log)


def claim(out_dir, *, resume: bool, overwrite: bool, inputs=(), log=print) -> RunFolder:
    """Make `out_dir` this run's folder, or raise a UserError saying why it cannot be.

    inputs: (what, path) pairs the run reads (the data folder, a split file); --out must not be one
    of them or inside one (checkpoints written into a dataset)."""
    out = Path(out_dir)
    refuse_inside_inputs(out, inputs)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {printable(out)} is an existing file, not a directory; choose another path")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with folder_mutex(out):
            take_lock(out, log)
    except OSError as e:
        raise UserError(
            f"cannot write the run directory {printable(out)} ({e.strerror or e}); choose another --out"
        ) from None
    folder = RunFolder(out, out / LOCK_NAME)
    _held.append(folder)
    try:
        check_holds_no_run(out, resume, overwrite, log)
        remove_leftovers(out, log)
    except BaseException:
        folder.release()
        raise
    return folder


def take_lock(out: Path, log) -> None:
    lock = out / LOCK_NAME
    owner = read_owner(lock)
    if lock.exists():
        if owner is not None and alive(owner, lock):
            raise UserError(
                f"{printable(out)} is in use by another training (process {owner}); wait for it to end, "
                "or choose another --out"
            )
        if owner != os.getpid():
            log(f"{printable(out)}: taking over the lock of a training that is no longer running (process {owner})")
        lock.unlink()
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")


def check_holds_no_run(out: Path, resume: bool, overwrite: bool, log) -> None:
    found = [name for name in RUN_MARKERS if (out / name).exists()]
    if resume or not found:
        return
    if not overwrite:
        raise UserError(
            f"--out {printable(out)} already holds a run ({', '.join(found)}): continue it with "
            f"--resume {printable(out)}, replace it with --overwrite, or choose another --out"
        )
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for name in RUN_FOLDERS:
        if (out / name).is_dir() and not (out / name).is_symlink():
            shutil.rmtree(out / name)
    log(f"--overwrite: the run that was in {printable(out)} ({', '.join(found)}) is replaced by this one")


def remove_leftovers(out: Path, log) -> None:
    """Temporary files of a writer that was killed before it could remove them (kill -9)."""
    gone = [p for p in out.iterdir() if LEFTOVER.match(p.name) and p.is_file() and not p.is_symlink()]
    for p in gone:
        p.unlink(missing_ok=True)
    if gone:
        log(f"{printable(out)}: removed {len(gone)} unfinished temporary file(s) of a killed training")


def refuse_inside_inputs(out: Path, inputs) -> None:
    where = os.path.realpath(out)
    for what, source in inputs:
        if not source:
            continue
        src = os.path.realpath(source)
        if where == src or where.startswith(src.rstrip(os.sep) + os.sep):
            raise UserError(
                f"--out {printable(out)} is {'' if where == src else 'inside '}{what} ({printable(source)}): "
                "a run writes checkpoints and logs there; choose a folder outside it"
            )


def data_folder(cfg) -> tuple[str, object]:
    """The data folder a run reads, as an input --out must stay out of (none for embedded data)."""
    embedded = get_spec(cfg.dataset).files.startswith("nothing")
    return ("the data folder", None if embedded else resolve_data_dir(cfg.data_dir))


# What a resumed run cannot change: its state (weights, optimizer, the algorithm's counts) and its
# labeled set were made for these. The dataset and its content are checked by run_data's digest
# (train.check_same_data), also before anything is written.
FIXED_ON_RESUME = (
    "algorithm",
    "model",
    "num_labels",
    "fold",
    "split_file",
    "image_size",
    "channels",
    "input_scaling",
)


def refuse_changes_on_resume(saved: dict, overrides: dict, run_dir) -> None:
    """Options given with --resume that would make another run: one UserError, before anything is
    written (the run's config.yaml stays as it was)."""
    if overrides.get("overwrite"):
        raise UserError("--resume continues a run and --overwrite replaces one: give one of them")
    changed = [
        f"--{key.replace('_', '-')} {overrides[key]} (the run has {saved.get(key)})"
        for key in FIXED_ON_RESUME
        if key in overrides and overrides[key] != saved.get(key)
    ]
    if changed:
        raise UserError(
            f"cannot resume {printable(run_dir)} with {', '.join(changed)}: its weights, optimizer state and "
            "labels belong to the run as it started. Start a new run with another --out for that"
        )


def refuse_config_in_out(config_file, out) -> None:
    """A --config file that a run in --out (or a comparison's subfolder) would replace or remove."""
    if not (config_file and out):
        return
    cfg_path, where = os.path.realpath(config_file), os.path.realpath(out)
    if cfg_path.startswith(where.rstrip(os.sep) + os.sep) and os.path.basename(cfg_path) in RUN_FILES:
        raise UserError(
            f"--config {printable(config_file)} lies in --out {printable(out)}, where the run writes its own "
            f"{os.path.basename(cfg_path)}: it would be replaced. Keep your config outside the run folder"
        )
