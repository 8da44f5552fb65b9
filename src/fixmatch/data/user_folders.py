"""`folders`: your own images, the real semi-supervised layout.

    ROOT/labeled/<class>/*     a few labeled images per class (any sizes, formats, RGB or grey)
    ROOT/unlabeled/**/*        many images without labels, any nesting (optional)
    ROOT/test/<class>/*        held-out labeled images (optional)

The labeled images become the train split (every one is labeled); the unlabeled images become
`x_unlabeled`, which the engine appends to the unlabeled pool after the train split, so the labeled
images are in the pool too, as in the official code. All images are decoded once, squared to
`image_size` (shorter side resized, centre crop) and cached (see image_cache.py).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fixmatch.data.base import ImageDataset, register
from fixmatch.data.download import missing_error, resolve_data_dir
from fixmatch.data.image_cache import (
    available_ram,
    cache_location,
    cached_decode,
    header_size,
    human_bytes,
    is_grey,
    largest_fitting_size,
    uint8_bytes,
    walk,
)
from fixmatch.errors import DataError, UserError
from fixmatch.outputs import printable

MAX_DEFAULT_SIZE = 32  # CPU-sized default; pass --image-size for more detail
MIN_SIZE = 8  # the smallest input the registered networks accept (cnn_small: two 2x poolings)
HOLDOUT_SEED = 0  # --val-per-class picks the same images on every run


def log(msg: str) -> None:
    print(f"folders: {msg}", file=sys.stderr, flush=True)


def class_files(root: Path, split: str) -> dict[str, list]:
    """{class folder name: its files (walk() entries, any depth)} for the visible folders of root/split.
    Non-image files are kept: decoding lists them as skipped."""
    return {
        d.name: walk(root, f"{split}/{d.name}")
        for d in sorted((root / split).iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }


@dataclass
class Layout:
    """The files of each part, as walk() entries (name under root, size, mtime)."""

    root: Path
    labeled: dict[str, list]
    test: dict[str, list] | None
    unlabeled: list

    @property
    def classes(self) -> list[str]:
        return sorted(self.labeled)


def scan(root: Path, val_per_class: int) -> Layout:
    """List the files and check the layout: every mistake is one error before any decoding."""
    if not (root / "labeled").is_dir():
        raise missing_error(
            "folders",
            root,
            [
                "labeled/<class>/<images>  (a few labeled images per class)",
                "unlabeled/**/<images>     (optional: many images without labels, any nesting)",
                "test/<class>/<images>     (optional: held-out labeled images)",
            ],
            "Class names come from the folder names under labeled/.",
        )
    loose = [p.name for p in (root / "labeled").iterdir() if p.is_file() and not p.name.startswith(".")]
    if loose:
        raise DataError(
            f"folders: {root / 'labeled'} holds files outside any class folder ({', '.join(loose[:3])}"
            f"{'...' if len(loose) > 3 else ''}); put each image in labeled/<class>/"
        )
    labeled = class_files(root, "labeled")
    if not labeled:
        raise DataError(
            f"folders: {root / 'labeled'} has no class folders; create labeled/<class>/ with a few images each"
        )
    empty = [c for c, files in labeled.items() if not files]
    if empty:
        raise DataError(
            f"folders: empty class folder{'s' if len(empty) > 1 else ''} in {root / 'labeled'}: "
            f"{', '.join(empty)}; every class needs at least one labeled image"
        )
    if len(labeled) < 2:
        raise DataError(
            f"folders: {root / 'labeled'} has one class folder ({next(iter(labeled))}); a classifier needs at least two"
        )
    test = class_files(root, "test") if (root / "test").is_dir() else None
    if test is not None:
        unknown = sorted(set(test) - set(labeled))
        if unknown:
            raise DataError(
                f"folders: {root / 'test'} has class folders that {root / 'labeled'} lacks: "
                f"{', '.join(unknown)} (known classes: {', '.join(sorted(labeled))})"
            )
        if not any(test.values()):
            raise DataError(f"folders: {root / 'test'} holds no files; remove it or add test/<class>/ images")
    if val_per_class:
        if test is not None:
            raise UserError(
                f"--val-per-class holds out labeled images only when there is no test/ folder, "
                f"and {root / 'test'} exists: drop --val-per-class (test/ is evaluated)"
            )
        short = [f"{c} ({len(f)})" for c, f in labeled.items() if len(f) <= val_per_class]
        if short:
            raise UserError(
                f"--val-per-class {val_per_class} leaves no labeled image to train on in: "
                f"{', '.join(short)}; lower it or add images"
            )
    unlabeled = walk(root, "unlabeled") if (root / "unlabeled").is_dir() else []
    return Layout(root, labeled, test, unlabeled)


def labeled_paths(layout: Layout) -> list[Path]:
    return [layout.root / name for c in layout.classes for name, _, _ in layout.labeled[c]]


def median_side(layout: Layout) -> int | None:
    """The median shorter side of the labeled images, from their headers (no decoding); None when
    no header can be read (decoding then reports the files)."""
    sides = []
    for p in labeled_paths(layout):
        try:
            sides.append(min(header_size(p)))
        except Exception:  # unreadable: decoding reports it
            pass
    return int(np.median(sides)) if sides else None


def all_grey(layout: Layout) -> bool:
    """Whether every readable labeled image is grey (from the headers)."""
    for p in labeled_paths(layout):
        try:
            if not is_grey(p):
                return False
        except Exception:
            continue
    return True


def default_size(median: int) -> int:
    """The image size without --image-size: the labeled images' median side, within MIN_SIZE..MAX_DEFAULT_SIZE."""
    return min(max(median, MIN_SIZE), MAX_DEFAULT_SIZE)


def choose_format(layout: Layout, image_size, channels) -> tuple[int, int, str]:
    """--image-size and --channels, or defaults from the labeled images' headers (no decoding):
    the median shorter side (at most 32), and 1 channel when every labeled image is grey."""
    notes = []
    if image_size is None:
        median = median_side(layout) or MAX_DEFAULT_SIZE
        image_size = default_size(median)
        notes.append(
            f"image size {image_size} (median shorter side of the labeled images: {median}, "
            f"capped at {MAX_DEFAULT_SIZE}; --image-size to change)"
        )
    elif not isinstance(image_size, int) or image_size < MIN_SIZE:
        raise UserError(f"--image-size must be an integer >= {MIN_SIZE}, got {image_size!r}")
    if channels is None:
        grey = all_grey(layout)
        channels = 1 if grey else 3
        notes.append(
            f"{channels} channel{'s' if channels == 3 else ''} "
            f"({'every labeled image is grey' if grey else 'some labeled images are colour'}; "
            "--channels to change)"
        )
    elif channels not in (1, 3):
        raise UserError(f"--channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    return image_size, channels, "; ".join(notes)


def check_memory(n_images: int, channels: int, size: int) -> None:
    """The decoded array and its copy in the training pool must fit in RAM: say so before decoding."""
    ram = available_ram()
    need = 2 * uint8_bytes(n_images, channels, size)  # the array + the engine's pool (train + unlabeled)
    if ram is not None and need > 0.9 * ram:
        fit = largest_fitting_size(2 * n_images, channels, int(0.9 * ram))
        advice = (
            f"--image-size {fit} would fit (or fewer unlabeled images)"
            if fit >= MIN_SIZE
            else f"not even --image-size {MIN_SIZE} fits: move some unlabeled images out"
        )
        raise UserError(
            f"folders: {n_images:,} images at {size}x{size}x{channels} need about "
            f"{human_bytes(need)} of RAM (the array and the training pool), but "
            f"{human_bytes(ram)} is available; {advice}"
        )


def hold_out(y: np.ndarray, per_class: int) -> np.ndarray:
    """A boolean mask of `per_class` images per class, chosen with a fixed seed."""
    rng = np.random.RandomState(HOLDOUT_SEED)
    mask = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        mask[rng.choice(idx, per_class, replace=False)] = True
    return mask


@register(
    "your own images: labeled/<class>/, unlabeled/** (no labels), optional test/<class>/; any sizes, "
    "RGB or grey, decoded once and cached",
    # A CPU-sized short schedule for a folder of some hundreds of images (no paper recipe applies):
    # the digits demo's small CNN and batch, every labeled image used (num_labels None = all), and the
    # two options a short schedule needs (EMA warm-up; BatchNorm statistics that follow the weights
    # within 1,000 steps).
    defaults=dict(
        model="cnn_small",
        num_labels=None,
        steps=1000,
        eval_every=100,
        batch_size=16,
        lr=0.05,
        ema_warmup=True,
        bn_momentum=0.1,
    ),
    files="labeled/<class>/<images>, optional unlabeled/**/<images> and test/<class>/<images>",
    framing="crop",  # predict/serve frame photos as the cache did: shorter side, centre square
)
def load_folders(data_dir=None, image_size=None, channels=None, val_per_class=0, workers=None, **_):
    root = resolve_data_dir(data_dir)
    val_per_class = int(val_per_class or 0)
    if val_per_class < 0:
        raise UserError(f"--val-per-class must be >= 0, got {val_per_class}")
    layout = scan(root, val_per_class)
    classes = layout.classes
    size, channels, why = choose_format(layout, image_size, channels)
    if why:
        log(why)

    # One file list for all three parts, in this order, so one cache covers the whole folder.
    lab = [(f, i) for i, c in enumerate(classes) for f in layout.labeled[c]]
    tst = [(f, classes.index(c)) for c in sorted(layout.test or {}) for f in layout.test[c]]
    files = [f for f, _ in lab] + [f for f, _ in tst] + layout.unlabeled
    labels = np.array([y for _, y in lab] + [y for _, y in tst] + [-1] * len(layout.unlabeled), np.int64)
    part = np.repeat([0, 1, 2], [len(lab), len(tst), len(layout.unlabeled)])
    check_memory(len(files), channels, size)
    if not layout.unlabeled:
        log(f"no files in {root / 'unlabeled'}: the unlabeled pool is the labeled images only")

    cache_dir, where = cache_location(root)
    t0 = time.perf_counter()
    got = cached_decode(root, files, size, channels, cache_dir, workers)
    skipped = [(str(root / files[i][0]), reason) for i, reason in got.skipped]
    # one count, said once: "decoded 370 of 374 images, 4 unreadable"
    counts = f"{len(files) - len(skipped):,} of {len(files):,} images, {len(skipped):,} unreadable"
    if got.decoded:
        cached = len(files) - got.decoded
        log(
            f"decoded {counts} ({got.decoded:,} files read in {got.seconds:.1f} s, "
            f"{got.decoded / max(got.seconds, 1e-9):,.0f} files/s{f', {cached:,} from the cache' if cached else ''}); "
            f"cache {cache_dir} ({where})"
        )
    else:
        log(f"from the cache: {counts}, in {time.perf_counter() - t0:.2f} s ({cache_dir}, {where})")
    if skipped:
        log(
            "unreadable (listed in skipped.txt of the run): "
            + "; ".join(f"{printable(p)} ({r})" for p, r in skipped[:3])
            + (" ..." if len(skipped) > 3 else "")
        )

    # The kept rows are in file order, so each part is one contiguous slice (no copy of the pixels).
    x = torch.from_numpy(got.images)
    y, kept_part = labels[got.kept], part[got.kept]
    bounds = np.searchsorted(kept_part, [0, 1, 2, 3])
    x_lab, x_tst, x_unl = (x[bounds[k] : bounds[k + 1]] for k in range(3))
    y_lab, y_tst = y[bounds[0] : bounds[1]], y[bounds[1] : bounds[2]]
    counts = np.bincount(y_lab, minlength=len(classes))
    unreadable = [c for c, n in zip(classes, counts) if n <= val_per_class]
    if unreadable:
        raise DataError(
            f"folders: no readable labeled image left to train on in class folder(s) "
            f"{', '.join(unreadable)} of {root / 'labeled'} (see the skipped files above)"
        )

    if layout.test is not None:
        x_test, y_test = x_tst, y_tst
        note = f"test/ folder ({len(y_test)} images)"
    elif val_per_class:
        held = hold_out(y_lab, val_per_class)
        x_test, y_test = x_lab[torch.from_numpy(held)], y_lab[held]
        x_lab, y_lab = x_lab[torch.from_numpy(~held)], y_lab[~held]
        note = (
            f"held-out: {val_per_class} labeled image{'s' if val_per_class > 1 else ''} per class "
            f"(--val-per-class; {len(y_test)} images, not trained on)"
        )
    else:
        x_test, y_test = x_lab, y_lab
        note = (
            f"no held-out images: accuracy is on the {len(y_lab)} labeled training images "
            "(add ROOT/test/<class>/ or pass --val-per-class K for a real estimate)"
        )
    log(
        f"{len(classes)} classes ({', '.join(map(printable, classes[:10]))}{', ...' if len(classes) > 10 else ''}), "
        f"{len(y_lab)} labeled, {len(x_unl):,} unlabeled (+ the labeled ones in the pool), "
        f"{size}x{size}x{channels}; evaluation: {note}"
    )
    return ImageDataset(
        "folders",
        x_lab,
        torch.from_numpy(y_lab),
        x_test,
        torch.from_numpy(y_test),
        list(classes),
        x_unlabeled=x_unl if len(x_unl) else None,
        skipped=skipped,
        eval_note=note,
    )
