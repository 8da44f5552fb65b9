"""The Flask application: the demo page, the JSON API, and JSON errors for everything that can go wrong."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from flask import Flask, Request, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from fixmatch.inference.page_upload import page_settings
from fixmatch.inference.predictor import load_predictor
from fixmatch.inference.preprocess import framing, read_photo
from fixmatch.serve.ratelimit import SharedRateLimit, parse_rate_limit
from fixmatch.serve.turns import Turns
from fixmatch.serve.upload import MAX_FILE_BYTES, ApiError, RequestReadTimeout, open_checked, read_upload, too_large

__all__ = ["create_app", "parse_rate_limit"]

ENVELOPE = 64 * 1024  # multipart overhead allowed on top of the file's own 1 MB
MAX_FORM_PARTS = 8  # the API takes one field; werkzeug's default allows 1,000
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# Decoding and inference: one at a time per process: each holds up to ~180 MB for a 40 MP PNG (JPEGs are
# decoded downscaled), and a worker has about one core: a second at once would only slow the first
# (measured: p95 93 ms instead of 65 at 2 workers x 4 clients). Others queue, in arrival order
# (turns.py), this long:
QUEUE_SECONDS = 10.0


class OverLimitWatch:
    """The request body as the form parser reads it, noting whether a read ran past the size limit."""

    def __init__(self, stream):
        self.stream, self.over_limit = stream, False

    def read(self, size: int = -1) -> bytes:
        try:
            return self.stream.read(size)
        except RequestEntityTooLarge:
            self.over_limit = True
            raise


class FormParser(FormDataParser):
    """werkzeug says 413 both for a body over the limit and for too many form parts; only the
    second is the form's fault (a chunked upload has no Content-Length that could tell them apart)."""

    def _parse_multipart(self, stream, mimetype, content_length, options):
        watched = OverLimitWatch(stream)
        try:
            _, form, files = super()._parse_multipart(watched, mimetype, content_length, options)
        except RequestEntityTooLarge:
            if watched.over_limit:
                raise
            raise ApiError(
                400, f"the form has too many parts (at most {MAX_FORM_PARTS}); send one field, 'file'"
            ) from None
        return stream, form, files


class MemoryRequest(Request):
    """Uploads stay in memory: werkzeug would spool files over 500 KB to a temporary file."""

    max_form_parts = MAX_FORM_PARTS
    form_data_parser_class = FormParser

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


# How the page says what happens to a photo, per framing (preprocess.py), and what a model was trained on
FRAMING_TEXT = {
    "face": "The largest frontal face is found, cropped and resized to {w}×{h} px",
    "resize": "The whole image is resized to {w}×{h} px (squeezed, not cropped)",
    "crop": "Its centre square (as wide as its shorter side) is cut out and resized to {w}×{h} px, as the "
    "training images were",
}
TRAINED_ON = {
    "fer2013": "FER2013 (48×48 grey faces)",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "stl10": "STL-10",
    "svhn": "SVHN",
    "digits": "scikit-learn's 8×8 digits",
    "folders": "its maker's own labelled photos",
    "imagefolder": "its maker's own labelled images",
    "npz": "its maker's own image arrays",
}


def page_text(info: dict) -> dict:
    size = {"w": info["input"]["width"], "h": info["input"]["height"]}
    return {
        "framing": FRAMING_TEXT[info["preprocess"]].format(**size),
        "trained_on": TRAINED_ON.get(info["dataset"] or "", info["dataset"] or "an unnamed dataset"),
    }


def model_info(predictor) -> dict:
    meta = predictor.meta
    c, h, w = meta["image_shape"]
    return {
        "classes": meta["class_names"],
        "input": {"channels": c, "height": h, "width": w},
        "normalization": {"mean": meta.get("mean"), "std": meta.get("std"), "inside_model": True},
        "preprocess": framing(meta),
        "model_name": meta.get("model_name"),
        "dataset": meta.get("dataset"),
        "file": Path(predictor.path).name,
        "card": meta.get("card"),
    }


def predict(predictor, data: bytes) -> dict:
    """Upload bytes -> the API's answer (the same preprocessing as `fixmatch predict`)."""
    meta, decoding = predictor.meta, []

    def decode(draft_first):  # timed apart: a photo may be decoded twice (preprocess.read_photo)
        t = time.perf_counter()
        try:
            return open_checked(data, draft=draft_first)
        finally:
            decoding.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    prepared = read_photo(decode, meta)
    t1 = time.perf_counter()
    probs = predictor.probabilities(prepared["pixels"][None])[0]
    t2 = time.perf_counter()
    return {
        **summarise(probs, meta["class_names"]),
        **{k: prepared[k] for k in ("framing", "face_found", "box", "image_size")},
        "ms": {
            "decode": ms(sum(decoding)),
            "preprocess": ms(t1 - t0 - sum(decoding)),
            "model": ms(t2 - t1),
            "total": ms(t2 - t0),
        },
    }


def summarise(probs: np.ndarray, names: list[str]) -> dict:
    top = int(np.argmax(probs))
    return {
        "label": names[top],
        "confidence": round(float(probs[top]), 5),
        "probabilities": {c: round(float(p), 5) for c, p in zip(names, probs)},
    }


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def http_error_answer(e: HTTPException) -> tuple[str, int]:
    code = e.code or 500
    return {
        413: too_large().message,
        404: "not found",
        405: "method not allowed",
        408: "the request took too long to arrive",
    }.get(code, e.name.lower()), code


def install_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(e: ApiError):
        return jsonify(error=e.message), e.status

    @app.errorhandler(RequestReadTimeout)
    def read_timeout(e: RequestReadTimeout):
        return jsonify(error=str(e)), 408, {"Connection": "close"}

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        allow = [(k, v) for k, v in e.get_headers() if k.lower() == "allow"]  # 405 says what is allowed
        message, status = http_error_answer(e)
        return jsonify(error=message), status, allow

    @app.errorhandler(Exception)
    def internal_error(e: Exception):
        app.logger.exception("unexpected error")  # the details go to the log, never to the client
        return jsonify(error="internal error while processing the image"), 500


def security_headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def create_app(
    model_source: str = "fer2013",
    rate_limit: str | SharedRateLimit | None = "60/minute",
    predictor=None,
    precision: str = "int8",
    face_detector: str = "auto",
) -> Flask:
    """One app per worker process; the model is loaded here, once (or passed in, for tests).
    rate_limit: a text such as '60/minute', or a SharedRateLimit made before the workers forked."""
    limiter = SharedRateLimit.from_text(rate_limit) if rate_limit is None or isinstance(rate_limit, str) else rate_limit
    app = Flask(__name__)
    app.request_class = MemoryRequest
    app.url_map.merge_slashes = False  # '//x' is a 404, not a redirect built from the Host header
    app.json.sort_keys = False  # type: ignore[attr-defined]  # probabilities keep the model's class order
    app.config["MAX_CONTENT_LENGTH"] = MAX_FILE_BYTES + ENVELOPE
    predictor = predictor or load_predictor(model_source, precision=precision)
    info = model_info(predictor)
    if info["preprocess"] == "face":
        from fixmatch.inference.face import (  # deferred: OpenCV, only for a model that frames faces
            use_detector,
            warm_up,
        )

        use_detector(face_detector)
        warm_up()
    predictor.probabilities(np.zeros((1, *info["input"].values()), np.uint8))  # first run allocates; not a user's
    busy = Turns()
    install_error_handlers(app)
    app.after_request(security_headers)

    @app.before_request
    def rate_limit_api():
        if limiter is None or not request.path.startswith("/api/"):
            return None  # the page, static files and /healthz are never limited
        allowed, left, retry = limiter.hit(request.remote_addr or "")
        if not allowed:
            return (
                jsonify(error=f"too many requests (at most {limiter.text} per client); try again in {retry} s"),
                429,
                {"Retry-After": str(retry)},
            )
        return None

    @app.get("/")
    def index():
        return render_template("index.html", info=info, text=page_text(info), page=page_settings())

    @app.get("/favicon.ico")
    def favicon():  # browsers ask for it whatever the page links
        return app.send_static_file("favicon.svg"), {"Cache-Control": "public, max-age=86400"}

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", model=info["file"])

    @app.get("/api/model")
    def api_model():
        return jsonify(info)

    @app.post("/api/predict")
    def api_predict():
        data = read_upload(request.files)
        if not busy.acquire(timeout=QUEUE_SECONDS):
            raise ApiError(503, "the server is busy; try again in a few seconds")
        try:
            return jsonify(predict(predictor, data))
        finally:
            busy.release()

    app.extensions["fixmatch"] = {"predictor": predictor, "limiter": limiter}
    return app
