"""What data a run trained on, recorded in its checkpoints, so that --resume can tell whether the data
it finds now is the data the run started with, and say what differs instead of failing later (a
state-dict mismatch, "num_labels exceeds") or continuing silently on other images."""

from __future__ import annotations

import hashlib

import numpy as np

SAMPLED_ROWS = 256  # the sampled fingerprint of records written before the full digest (still compared)


def as_array(x) -> np.ndarray:
    return x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)


def rows_digest(h, x) -> None:
    """Feed the shape and up to SAMPLED_ROWS evenly spaced rows of x (a tensor or None) into h."""
    if x is None:
        h.update(b"none")
        return
    a = as_array(x)
    h.update(repr((a.shape, str(a.dtype))).encode())
    picked = np.unique(np.linspace(0, len(a) - 1, min(len(a), SAMPLED_ROWS)).astype(np.int64))
    h.update(np.ascontiguousarray(a[picked]).tobytes())


def content_digest(data) -> str:
    """blake2b of every label and every pixel of each part, with its shape and type: one changed
    image is another digest. About 0.2 s for CIFAR-10's 50k+10k images (docs/training.md)."""
    h = hashlib.blake2b(digest_size=16)
    for x in (data.y_train, data.y_test, data.x_train, data.x_test, data.x_unlabeled):
        if x is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(as_array(x))
        h.update(repr((a.shape, str(a.dtype))).encode())
        h.update(a.data)  # contiguous: hashed in place, no copy
    return h.hexdigest()


def describe(dataset: str, data) -> dict:
    """The record a checkpoint keeps: the dataset, its classes, image shape, counts, the digest of
    all its content, and the older sampled fingerprint (what records from before the digest hold)."""
    h = hashlib.blake2b(digest_size=16)
    for y in (data.y_train, data.y_test):
        h.update(y.cpu().numpy().astype(np.int64).tobytes())
    for x in (data.x_train, data.x_test, data.x_unlabeled):
        rows_digest(h, x)
    return {
        "dataset": dataset,
        "class_names": list(data.class_names),
        "image_shape": list(data.image_shape),
        "train_images": len(data.y_train),
        "test_images": len(data.y_test),
        "unlabeled_images": 0 if data.x_unlabeled is None else len(data.x_unlabeled),
        "fingerprint": h.hexdigest(),
        "content_digest": content_digest(data),
    }


def differences(saved: dict, now: dict) -> list[str]:
    """What differs between the record a run started with and the data found now ([]: the same).
    A record from before fingerprints (only dataset, classes and shape) is compared on what it has."""
    found = []
    if saved.get("dataset") != now["dataset"]:
        found.append(f"dataset {saved.get('dataset')} -> {now['dataset']}")
    old, new = saved.get("class_names"), now["class_names"]
    if old is not None and old != new:
        added, removed = [c for c in new if c not in old], [c for c in old if c not in new]
        what = "; ".join(
            part
            for part in (
                f"added {', '.join(added)}" if added else "",
                f"removed {', '.join(removed)}" if removed else "",
            )
            if part
        )
        found.append(f"classes {', '.join(old)} -> {', '.join(new)}" + (f" ({what})" if what else " (another order)"))
    if saved.get("image_shape") not in (None, now["image_shape"]):
        found.append(f"image shape {saved['image_shape']} -> {now['image_shape']}")
    for key in ("train_images", "test_images", "unlabeled_images"):
        if key in saved and saved[key] != now[key]:
            found.append(f"{saved[key]} -> {now[key]} {key.replace('_', ' ')}")
    key = "content_digest" if "content_digest" in saved else "fingerprint"  # the finest the record holds
    if not found and saved.get(key) not in (None, now[key]):
        found.append("the same counts, but other images or labels")
    return found
