"""The face detectors side by side on a proxy set: FER2013 faces placed in larger photos.

FER2013 has no photos, only its 48x48 crops, so the proxy photo is built around one: a face
(PrivateTest for the measurement, Training for --fit) enlarged to 15-55% of the photo's shorter
side, placed anywhere, turned by up to 20 degrees, over one of three backgrounds (a smooth
pattern, large blotches, a lit gradient; sensor noise on all). The face's square is where FER2013
cut its crop, so a detector's answer can be scored against it:

- detected: a box whose crop overlaps the true square by IoU >= 0.5 (a box elsewhere is a miss);
- box IoU: the mean IoU of the detected crops with the true square (how close to FER's framing);
- accuracy: the served model (int8) on the framed crop, centre square when no face is found;
- CPU ms per photo of the detector (this thread's CPU clock), on the proxy photos and on the same
  backgrounds with no face (where Haar searches the whole photo), and false alarms there.

    python benchmarks/face_detectors.py --data-dir DATA            # the table (docs/serving.md)
    python benchmarks/face_detectors.py --data-dir DATA --fit      # YuNet's box -> FER crop constants
    python benchmarks/face_detectors.py --data-dir DATA --yunet-sides 160,240 160,256 192   # other search plans
    python benchmarks/face_detectors.py --data-dir DATA --found-at 64,96,160,240   # what each copy finds, by face size
"""

from __future__ import annotations

import argparse
import io
import lzma
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fixmatch.inference import face, yunet
from fixmatch.inference.predict import load

PHOTO = (640, 480)  # width, height of a proxy photo
SCALES = (0.15, 0.55)  # the face's side as a fraction of the photo's shorter side
MAX_TURN = 20.0  # degrees


def background(rng, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    kind = rng.integers(3)
    if kind == 0:  # a smooth pattern
        b = 110 + 60 * np.sin(xx / rng.uniform(20, 60)) * np.cos(yy / rng.uniform(20, 60))
    elif kind == 1:  # large blotches
        b = cv2.resize(rng.uniform(40, 220, (h // 32 + 1, w // 32 + 1)), (w, h), interpolation=cv2.INTER_CUBIC)
    else:  # a lit gradient
        b = np.full((h, w), rng.uniform(30, 230)) + (xx / w) * rng.uniform(-60, 60)
    return np.clip(b + rng.normal(0, 4, (h, w)), 0, 255).astype(np.uint8)


def place(crop: np.ndarray, rng, turn: float = MAX_TURN) -> tuple[np.ndarray, np.ndarray]:
    """A 48x48 face -> (a grey proxy photo holding it, the face's square [x, y, side, side])."""
    w, h = PHOTO
    side = int(rng.uniform(*SCALES) * min(w, h))
    x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
    photo = background(rng, h, w)
    big = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
    turn_by = rng.uniform(-turn, turn)
    m = cv2.getRotationMatrix2D((side / 2, side / 2), turn_by, 1.0)
    inside = cv2.warpAffine(np.full((side, side), 255, np.uint8), m, (side, side)) > 127
    region = photo[y : y + side, x : x + side]
    region[inside] = cv2.warpAffine(big, m, (side, side))[inside]
    return photo, np.array([x, y, side, side], float)


def iou(a, b) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    inter = max(0.0, min(ax1, bx1) - max(a[0], b[0])) * max(0.0, min(ay1, by1) - max(a[1], b[1]))
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def fit(x_train: np.ndarray, n: int) -> None:
    """Least squares on Training faces: the true square's side from YuNet's w and h, its centre's
    offset from the box's centre in units of the side."""
    rng = np.random.default_rng(1)
    boxes, truths = [], []
    for crop in x_train[rng.permutation(len(x_train))[:n]]:
        photo, truth = place(crop, rng, turn=0.0)
        h, w = photo.shape
        scale = yunet.SIDE / max(h, w)
        small = cv2.resize(photo, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        hits = [(b / scale, s) for b, s in yunet.raw_boxes(small) if s >= yunet.MIN_SCORE]
        if hits:
            box = max(hits, key=lambda hit: hit[1])[0]
            centre = box[:2] + box[2:] / 2
            if iou([*centre - truth[2] / 2, truth[2], truth[2]], truth) > 0.3:  # the face, not the background
                boxes.append(box)
                truths.append(truth)
    b, t = np.array(boxes), np.array(truths)
    (width, height), *_ = np.linalg.lstsq(b[:, 2:], t[:, 2], rcond=None)
    dx = np.median((t[:, 0] + t[:, 2] / 2 - b[:, 0] - b[:, 2] / 2) / t[:, 2])
    dy = np.median((t[:, 1] + t[:, 2] / 2 - b[:, 1] - b[:, 3] / 2) / t[:, 2])
    print(
        f"{len(b)} of {n} Training faces found; WIDTH, HEIGHT, DX, DY = {width:.3f}, {height:.3f}, {dx:.3f}, {dy:.3f}"
    )


def yunet_plan(sides: tuple[int, ...]):
    """find_face with YuNet searching copies of these longest sides in turn (yunet.SIDES by default)."""

    def find(grey: np.ndarray) -> list[int] | None:
        crop = yunet.detect(grey, sides)
        return None if crop is None else face.inside(crop, *grey.shape)

    return find


def plan_sides(text: str) -> tuple[int, ...]:
    """'160,240' -> (160, 240): longest sides from 32 to 1280 px, each larger than the one before."""
    try:
        sides = tuple(int(side) for side in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a plan is whole pixel sides joined by commas, e.g. 160,240 (got {text!r})")
    if not all(32 <= side <= 1280 for side in sides) or list(sides) != sorted(set(sides)):
        raise argparse.ArgumentTypeError(f"sides from 32 to 1280 px, each larger than the one before (got {text!r})")
    return sides


def measure(x_test: np.ndarray, y_test: np.ndarray, n: int, detectors: dict) -> None:
    """detectors: {row name: grey photo -> face box or None}."""
    predictor = load("fer2013")
    rng = np.random.default_rng(0)
    picked = rng.permutation(len(x_test))[:n]
    photos = [(place(x_test[i], rng), y_test[i]) for i in picked]
    empty = [background(rng, PHOTO[1], PHOTO[0]) for _ in range(max(20, n // 10))]
    print(f"{n} PrivateTest faces in {PHOTO[0]}x{PHOTO[1]} photos; {len(empty)} photos with no face")
    print(
        f"{'detector':<15} {'detected':>9} {'box IoU':>8} {'accuracy':>9} {'ms/photo':>9} "
        f"{'ms no face':>11} {'false alarms':>13}"
    )
    for name, find_face in detectors.items():
        found, overlaps, correct, cost = 0, [], 0, 0.0
        for (photo, truth), label in photos:
            t0 = time.thread_time()
            box = find_face(photo)
            cost += time.thread_time() - t0
            if box is not None and iou(box, truth) >= 0.5:
                found += 1
                overlaps.append(iou(box, truth))
            crop = face.crop_to_input(photo, box or face.centre_square(*photo.shape), (48, 48))
            correct += int(np.argmax(predictor.probabilities(crop[None])[0]) == label)
        t0, alarms = time.thread_time(), sum(find_face(p) is not None for p in empty)
        idle = (time.thread_time() - t0) / len(empty)
        print(
            f"{name:<15} {100 * found / n:>8.1f}% {np.mean(overlaps):>8.3f} {100 * correct / n:>8.1f}% "
            f"{1000 * cost / n:>9.1f} {1000 * idle:>11.1f} {alarms:>6} of {len(empty)}"
        )


def found_at(x_test: np.ndarray, n: int, sides: tuple[int, ...]) -> None:
    """For each copy size alone: the share of proxy faces it finds, by the face's size, and whether
    it finds a face in the serving targets' photos (serve_targets.py: real photos, not FER crops)."""
    from serve_targets import photos

    rng = np.random.default_rng(0)
    bands = ((0.15, 0.25), (0.25, 0.35), (0.35, 0.45), (0.45, 0.56))
    hits = {band: {side: 0 for side in sides} for band in bands}
    counts = dict.fromkeys(bands, 0)
    for i in rng.permutation(len(x_test))[:n]:
        photo, truth = place(x_test[i], rng)
        band = next(b for b in bands if b[0] <= truth[2] / min(PHOTO) < b[1])
        counts[band] += 1
        for side in sides:
            box = yunet.detect_at(photo, side)
            box = None if box is None else face.inside(box, *photo.shape)
            hits[band][side] += int(box is not None and iou(box, truth) >= 0.5)
    print(f"{n} PrivateTest faces in {PHOTO[0]}x{PHOTO[1]} photos: found by one copy alone, by the face's side")
    print(f"{'face side / shorter side':<26}" + "".join(f"{side:>8} px" for side in sides))
    for band in bands:
        shares = "".join(f"{100 * hits[band][side] / max(1, counts[band]):>10.0f}%" for side in sides)
        print(f"{band[0]:.2f}-{band[1]:.2f} ({counts[band]:>4} faces)   {shares}")
    for name, data in photos().items():
        grey = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
        print(
            f"{name:<26}"
            + "".join(f"{'face' if yunet.detect_at(grey, side) is not None else '-':>11}" for side in sides)
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="the folder holding FER2013")
    p.add_argument("--images", type=int, default=1000, help="proxy photos (default 1000)")
    p.add_argument("--fit", action="store_true", help="fit YuNet's box to FER's crop on Training faces instead")
    p.add_argument(
        "--found-at", type=plan_sides, metavar="SIDES", help="instead: what YuNet finds at each of these sides alone"
    )
    p.add_argument(
        "--yunet-sides",
        nargs="+",
        default=[],
        type=plan_sides,
        metavar="PLAN",
        help="also measure YuNet searching copies of these longest sides in turn, e.g. 160,256 or 192 (one row each)",
    )
    args = p.parse_args()
    cv2.setNumThreads(1)  # one core, as each server worker has
    data = read_fer(Path(args.data_dir) / "fer2013.npz.xz")
    if args.fit:
        fit(data["x_train"][..., 0], args.images)
        return
    private = data["test_usage"] == 1
    if args.found_at:
        found_at(data["x_test"][private][..., 0], args.images, args.found_at)
        return
    detectors = {"haar": lambda grey: face.find_face(grey, "haar")}
    if yunet.available():
        detectors["yunet"] = lambda grey: face.find_face(grey, "yunet")
        for sides in args.yunet_sides:
            detectors["yunet " + "+".join(map(str, sides))] = yunet_plan(sides)
    measure(data["x_test"][private][..., 0], data["y_test"][private], args.images, detectors)


def read_fer(path: Path) -> dict:
    """The offline FER2013 archive, read without torch: the data loaders would bring torch and its
    OpenMP runtime into the process, which the server never has and which slows YuNet's."""
    with lzma.open(path) as f:
        return dict(np.load(io.BytesIO(f.read()), allow_pickle=False))


if __name__ == "__main__":
    main()
