"""What decoding a face model's JPEG only as large as the face search needs (preprocess.read_photo)
does to the answers: the proxy photos of face_detectors.py (FER2013 PrivateTest faces in larger
photos), saved as quality-90 JPEGs, framed three ways:

- working size: decoded as before the change (at most 1280-2560 px), searched and cropped there;
- its box, working-size crop: the box found in the reduced decode, cut from the working-size decode
  (what the box alone changes);
- read_photo: what the server and predict do now (box and crop from the reduced decode; a face
  smaller than the model's input cut from a second, working-size decode).

    python benchmarks/search_decode.py --data-dir DATA --scale 2   # 1280x960 photos; --images, --seed
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import cv2
import numpy as np
from face_detectors import PHOTO, place, read_fer
from PIL import Image

from fixmatch.imaging.decoding import UPLOAD_FORMATS, open_image
from fixmatch.inference import face, preprocess
from fixmatch.inference.predict import load

WAYS = ("working size", "its box, working-size crop", "read_photo")


def jpeg(photo: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="the folder holding FER2013")
    p.add_argument("--images", type=int, default=1000, help="proxy photos (default 1000)")
    p.add_argument("--scale", type=float, default=1.0, help="the proxy photo enlarged by this (default 1: 640x480)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    cv2.setNumThreads(1)
    predictor = load("fer2013")
    meta = predictor.meta
    fer = read_fer(Path(args.data_dir) / "fer2013.npz.xz")
    private = fer["test_usage"] == 1
    faces, labels = fer["x_test"][private][..., 0], fer["y_test"][private]
    rng = np.random.default_rng(args.seed)
    correct = dict.fromkeys(WAYS, 0)
    for i in rng.permutation(len(faces))[: args.images]:
        photo, _ = place(faces[i], rng)
        encoded = jpeg(cv2.resize(photo, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_CUBIC))
        before = open_image(encoded, UPLOAD_FORMATS, draft=lambda im: preprocess.draft(im, meta))
        working = preprocess.upright(before, 1)
        now = preprocess.read_photo(lambda draft_first: open_image(encoded, UPLOAD_FORMATS, draft=draft_first), meta)
        crops = {
            WAYS[0]: face.frame_face(working, (48, 48))[0],
            WAYS[1]: face.crop_to_input(working, now["box"] or face.centre_square(*working.shape), (48, 48)),
            WAYS[2]: now["pixels"],
        }
        for way, crop in crops.items():
            correct[way] += int(np.argmax(predictor.probabilities(crop[None])[0]) == labels[i])
    w, h = round(PHOTO[0] * args.scale), round(PHOTO[1] * args.scale)
    print(f"{args.images} PrivateTest faces in {w}x{h} JPEGs (seed {args.seed}); accuracy (int8 model):")
    for way, n in correct.items():
        print(f"  {way:<28} {100 * n / args.images:.1f}%")


if __name__ == "__main__":
    main()
