"""Decode image files once (in parallel) into one uint8 array, and cache the result.

Every image becomes a square: the shorter side is resized to `size`, the centre is cropped, and the
pixels are converted to `channels` (1 = grey, 3 = RGB). The cache is one uncompressed .npz per
(size, channels) setting holding the pixels and, per file, its path, byte size and mtime. A file
whose path, size and mtime match an entry is not decoded again, so an unchanged folder loads in
about the time it takes to read the array, and a changed or added file costs only its own decode.
Unreadable files are remembered with their reason (not retried until they change).
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fixmatch.errors import DataError, UserError
from fixmatch.imaging.decoding import failure_reason, open_image
from fixmatch.imaging.framing import draft_for_square, square, to_mode
from fixmatch.outputs import write_atomic

CACHE_VERSION = 1  # bump when decoding changes, so old caches are not reused
CACHE_DIR_NAME = ".fixmatch-cache"
POOL_MIN = 200  # fewer images than this are decoded in-process (a pool costs more than it saves)
CHUNK = 64  # images per task sent to a worker process
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


# ---------------------------------------------------------------- one image


def is_grey(path) -> bool:
    """Whether an image is greyscale, from its header (and palette) only: no pixel decoding."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in GREY_MODES:
            return True
        if im.mode == "P":  # a palette of greys only is a grey image
            pal = np.asarray(im.getpalette() or [], dtype=np.int16).reshape(-1, 3)
            return bool((pal == pal[:, :1]).all())
        return False


def header_size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def decode(path, size: int, channels: int) -> np.ndarray:
    """One file -> uint8 (channels, size, size), within the decoding policy that the server and
    predict use too (fixmatch/imaging/decoding.py). Raises on anything unreadable or refused."""
    # a large JPEG decodes at a reduced scale (much faster); truncated or corrupt data fails here
    with open_image(path, draft=lambda im: draft_for_square(im, size, channels)) as im:
        return frame(im, size, channels)


def frame(im, size: int, channels: int) -> np.ndarray:
    """A loaded PIL image -> the training input: upright (EXIF), `channels`, shorter side `size`,
    centre square; uint8 (channels, size, size). Inference must frame images the same way."""
    from PIL import ImageOps

    im = ImageOps.exif_transpose(im)  # phone photos: the orientation the viewer shows
    a = np.asarray(square(to_mode(im, channels), size), dtype=np.uint8)
    return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))


def decode_chunk(task):
    """Worker: decode a list of paths; returns (start, images of the readable ones, ok flags, reasons)."""
    start, paths, size, channels = task
    out, ok, reasons = [], [], []
    for p in paths:
        try:
            out.append(decode(p, size, channels))
            ok.append(True)
            reasons.append("")
        except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
            ok.append(False)
            reasons.append(failure_reason(p, e))
    images = np.stack(out) if out else np.empty((0, channels, size, size), np.uint8)
    return start, images, ok, reasons


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def decode_many(
    paths: list[str], size: int, channels: int, workers: int | None = None, desc: str = "decoding"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode `paths` with a process pool and a progress bar.
    Returns (images (N, C, S, S) with a row for every path, zeros where unreadable; ok flags; reasons)."""
    from tqdm import tqdm

    n = len(paths)
    images = np.zeros((n, channels, size, size), np.uint8)
    ok = np.zeros(n, bool)
    reasons = [""] * n
    tasks = [(i, paths[i : i + CHUNK], size, channels) for i in range(0, n, CHUNK)]
    workers = workers or default_workers()
    with tqdm(total=n, desc=desc, unit="img", file=sys.stderr, disable=None, mininterval=1.0) as bar:

        def take(result):
            start, imgs, flags, why = result
            rows = start + np.flatnonzero(flags)
            images[rows] = imgs
            ok[start : start + len(flags)] = flags
            reasons[start : start + len(flags)] = why
            bar.update(len(flags))

        if workers <= 1 or n < POOL_MIN:
            for t in tasks:
                take(decode_chunk(t))
        else:
            run_pool(tasks, workers, take)
    return images, ok, reasons


def run_pool(tasks: list, workers: int, take) -> None:
    """Run decode_chunk over tasks in worker processes. A file that kills its worker (a crash
    inside an image library) must neither hang nor end the run: when the pool breaks, the chunks
    not finished are retried one file per task in one worker, in order, so the first one that breaks
    it again is the culprit; it is reported unreadable and the rest goes on in parallel."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # fork: workers start at once and need not re-import torch; they only run PIL and numpy
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
    hunting = False  # one worker, one file per task: looking for the file that crashes
    while tasks:
        left = {}
        try:
            with ProcessPoolExecutor(1 if hunting else workers, mp_context=ctx) as pool:
                left = {pool.submit(decode_chunk, t): t for t in tasks}
                for done in as_completed(list(left)):
                    take(done.result())
                    del left[done]
            tasks = []
        except BrokenProcessPool:
            unfinished = []
            for future, task in left.items():  # submission order
                if future.done() and not future.cancelled() and future.exception() is None:
                    take(future.result())
                else:
                    unfinished.append(task)
            if hunting:
                start, _, size, channels = unfinished[0]
                take(
                    (
                        start,
                        np.empty((0, channels, size, size), np.uint8),
                        [False],
                        ["crashed the image decoder (a damaged or hostile file)"],
                    )
                )
                tasks, hunting = unfinished[1:], False
            else:
                tasks = [
                    (start + k, [p], size, channels)
                    for start, paths, size, channels in unfinished
                    for k, p in enumerate(paths)
                ]
                hunting = True


# ---------------------------------------------------------------- memory


def uint8_bytes(n_images: int, channels: int, size: int) -> int:
    """Bytes of n square uint8 images: what the data costs in RAM or on the device."""
    return int(n_images) * int(channels) * int(size) * int(size)


def largest_fitting_size(n_images: int, channels: int, budget_bytes: int) -> int:
    """The largest square side at which n images of `channels` fit in budget_bytes (0: none)."""
    if n_images <= 0:
        return 1 << 16
    return int(math.isqrt(max(int(budget_bytes), 0) // (int(n_images) * int(channels))))


def human_bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def available_ram() -> int | None:
    """MemAvailable in bytes (Linux), else None (unknown: no check)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ---------------------------------------------------------------- the cache


def cache_location(root: Path) -> tuple[Path, str]:
    """ROOT/.fixmatch-cache when writable, else the user cache dir (one folder per data root)."""
    local = root / CACHE_DIR_NAME
    try:
        local.mkdir(exist_ok=True)
        probe = local / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return local, "inside the data folder"
    except OSError:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fixmatch"
        tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
        return base / f"{root.name}-{tag}", "the data folder is not writable"


@dataclass
class Decoded:
    """The images of the files given, in their order, minus the unreadable ones."""

    images: np.ndarray  # (len(kept), C, S, S) uint8
    kept: np.ndarray  # indices into the file list of the rows of `images` (ascending)
    skipped: list = field(default_factory=list)  # (index into the file list, reason)
    decoded: int = 0  # files decoded this time (0: everything came from the cache)
    seconds: float = 0.0  # time spent decoding
    load_seconds: float = 0.0  # time spent reading the cache


def walk(root: Path, sub: str) -> list[tuple[str, int, int]]:
    """(name relative to root, byte size, mtime_ns) of every file under root/sub, any depth, sorted;
    hidden files and folders (.DS_Store, .git, our own cache) left out. One scandir pass: a
    DirEntry knows whether it is a file without another system call."""
    found, stack, seen = [], [sub], set()
    while stack:
        rel = stack.pop()
        try:
            st = os.stat(root / rel)
            if (st.st_dev, st.st_ino) in seen:  # a symlink back up the tree: list each folder once
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(root / rel) as entries:
                for e in entries:
                    if e.name.startswith("."):
                        continue
                    name = f"{rel}/{e.name}"
                    if e.is_dir():  # symlinked folders are followed (unlabeled/ -> /data/photos)
                        stack.append(name)
                    elif e.is_file():
                        st = e.stat()
                        found.append((name, st.st_size, st.st_mtime_ns))
        except OSError as e:
            raise DataError(f"cannot list {root / rel} ({e.strerror or e}); check its permissions") from None
    found.sort()
    return found


# The cache of one (size, channels) setting: a small index (.npz: names, sizes, mtimes, ok flags,
# reasons, and the token of its pixel file) and the pixels of the readable files as a plain .npy
# (read at disk speed; a zip member would be CRC-checked byte by byte). Each is replaced atomically
# and the index names its pixel file, so a reader never pairs an index with other pixels.
INDEX_KEYS = ("names", "sizes", "mtimes", "ok", "reasons", "token", "digest")
SCALAR_KEYS = ("token", "digest")  # digest: of the pixels, so that altered pixels are decoded again, not trained on


def pixels_digest(images: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(images).data, digest_size=16).hexdigest()


def cache_paths(cache_dir: Path, size: int, channels: int, token: str = "*") -> tuple[Path, Path]:
    stem = f"{size}px-{channels}ch-v{CACHE_VERSION}"
    return cache_dir / f"index-{stem}.npz", cache_dir / f"images-{stem}-{token}.npy"


def read_cache(cache_dir: Path, size: int, channels: int) -> dict | None:
    """The cache's index and pixels, or None (rebuild) unless they agree with each other and with
    the setting: an array of another shape or type (altered, or from elsewhere) is never trained on."""
    index, _ = cache_paths(cache_dir, size, channels)
    try:
        with np.load(index, allow_pickle=False) as z:
            entry = {k: z[k] for k in INDEX_KEYS}
        n = len(entry["names"])
        if any(entry[k].shape != (n,) for k in INDEX_KEYS if k not in SCALAR_KEYS) or entry["ok"].dtype != bool:
            return None
        # mapped, not read: the header's shape and type are checked before any pixel is loaded
        pixels = np.load(cache_paths(cache_dir, size, channels, str(entry["token"]))[1], mmap_mode="r")
        if pixels.dtype != np.uint8 or pixels.shape != (int(entry["ok"].sum()), channels, size, size):
            return None
        entry["images"] = np.array(pixels)  # a copy in memory: writable, and the file may be replaced
        if pixels_digest(entry["images"]) != str(entry["digest"]):  # pixels altered since they were written
            return None
        return entry
    except Exception:  # missing, partly written by a killed run, or from another version: rebuild
        return None


def write_cache(cache_dir: Path, size: int, channels: int, images: np.ndarray, index: dict) -> None:
    token = secrets.token_hex(8)
    index_path, images_path = cache_paths(cache_dir, size, channels, token)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(images_path, lambda f: np.save(f, images))
        digest = np.array(pixels_digest(images))
        write_atomic(index_path, lambda f: np.savez(f, token=np.array(token), digest=digest, **index))
        for old in cache_dir.glob(cache_paths(cache_dir, size, channels)[1].name):
            if old != images_path:
                old.unlink(missing_ok=True)
    except (OSError, UserError) as e:  # UserError: write_atomic's (a full disk)
        print(
            f"warning: could not write the image cache in {cache_dir} ({e}); the next run decodes again",
            file=sys.stderr,
        )


def cached_decode(
    root: Path, files: list[tuple[str, int, int]], size: int, channels: int, cache_dir: Path, workers: int | None = None
) -> Decoded:
    """Images of `files` ((name under root, size, mtime_ns), as walk() lists them), from the cache
    where name, size and mtime still match; the rest decoded."""
    n = len(files)
    names = np.array([f[0] for f in files], dtype=str)
    sizes = np.array([f[1] for f in files], dtype=np.int64)
    mtimes = np.array([f[2] for f in files], dtype=np.int64)
    t0 = time.perf_counter()
    old = read_cache(cache_dir, size, channels)
    load_seconds = time.perf_counter() - t0

    if (
        old is not None
        and len(old["names"]) == n
        and (old["names"] == names).all()
        and (old["sizes"] == sizes).all()
        and (old["mtimes"] == mtimes).all()
    ):
        ok = old["ok"]  # the whole list unchanged: the stored array is the answer, no copy
        return Decoded(old["images"], np.flatnonzero(ok), skipped_of(ok, old["reasons"]), 0, 0.0, load_seconds)

    # Reuse what matches (same name, size and mtime), decode the rest.
    ok = np.zeros(n, bool)
    reasons = np.full(n, "", dtype=object)
    images = np.zeros((n, channels, size, size), np.uint8)
    todo = np.ones(n, bool)
    if old is not None:
        row_of = {
            key: j for j, key in enumerate(zip(old["names"].tolist(), old["sizes"].tolist(), old["mtimes"].tolist()))
        }
        pairs = [
            (i, row_of[key])
            for i, key in enumerate(zip(names.tolist(), sizes.tolist(), mtimes.tolist()))
            if key in row_of
        ]
        if pairs:
            new, was = (np.array(v, dtype=np.int64) for v in zip(*pairs))
            todo[new], ok[new], reasons[new] = False, old["ok"][was], old["reasons"][was]
            stored_row = np.cumsum(old["ok"]) - 1  # entry j's row in the stored (readable-only) array
            readable = old["ok"][was]
            images[new[readable]] = old["images"][stored_row[was[readable]]]
        del old
    idx = np.flatnonzero(todo)
    t1 = time.perf_counter()
    if len(idx):
        imgs, flags, why = decode_many([str(root / names[i]) for i in idx], size, channels, workers)
        images[idx], ok[idx], reasons[idx] = imgs, flags, why
    seconds = time.perf_counter() - t1
    kept = np.flatnonzero(ok)
    images = images[kept] if len(kept) < n else images
    reasons = reasons.astype(str) if n else np.array([], dtype=str)
    write_cache(
        cache_dir, size, channels, images, dict(names=names, sizes=sizes, mtimes=mtimes, ok=ok, reasons=reasons)
    )
    return Decoded(images, kept, skipped_of(ok, reasons), int(len(idx)), seconds, load_seconds)


def skipped_of(ok: np.ndarray, reasons: np.ndarray) -> list:
    return [(int(i), str(reasons[i])) for i in np.flatnonzero(~ok)]
