"""The Flask application: the demo page, the JSON API, and JSON errors for everything that can go wrong."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from flask import Flask, Request, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from fixmatch.serve.face import frame_face, warm_up
from fixmatch.serve.model import load_predictor
from fixmatch.serve.upload import MAX_FILE_BYTES, ApiError, open_checked, read_upload, too_large

ENVELOPE = 64 * 1024  # multipart overhead allowed on top of the file's own 1 MB
CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; object-src 'none'"


class MemoryRequest(Request):
    """Uploads stay in memory: werkzeug would spool files over 500 KB to a temporary file."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def parse_rate_limit(rate_limit: str | None) -> str | None:
    """'off'/''/None -> None; else a Flask-Limiter string such as '60/minute' (checked here, not at first request)."""
    if not rate_limit or rate_limit.strip().lower() in ("off", "none", "0"):
        return None
    from limits import parse_many

    from fixmatch.errors import UserError

    try:
        parse_many(rate_limit)
    except ValueError:
        raise UserError(f"bad --rate-limit {rate_limit!r}: use e.g. '60/minute', '5/second' or 'off'") from None
    return rate_limit


def model_info(predictor) -> dict:
    meta = predictor.meta
    c, h, w = meta["image_shape"]
    return {"classes": meta["class_names"], "input": {"channels": c, "height": h, "width": w},
            "normalization": {"mean": meta.get("mean"), "std": meta.get("std"), "inside_model": True},
            "model_name": meta.get("model_name"), "dataset": meta.get("dataset"),
            "file": Path(predictor.path).name, "card": meta.get("card")}


def predict(predictor, data: bytes) -> dict:
    t0 = time.perf_counter()
    image = open_checked(data)
    t1 = time.perf_counter()
    crop, box, size = frame_face(image, predictor.meta["image_shape"])
    t2 = time.perf_counter()
    probs = predictor.probabilities(crop[None])[0]
    t3 = time.perf_counter()
    names = predictor.meta["class_names"]
    return {"label": names[int(np.argmax(probs))],
            "probabilities": {c: round(float(p), 5) for c, p in zip(names, probs)},
            "box": box, "face_found": box is not None, "image_size": list(size),
            "ms": {"decode": ms(t1 - t0), "face": ms(t2 - t1), "model": ms(t3 - t2), "total": ms(t3 - t0)}}


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def install_limiter(app: Flask, rate_limit: str | None):
    """Per-client (remote address) limit on the API, in memory (so per worker process); 429 + Retry-After."""
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    return Limiter(get_remote_address, app=app, storage_uri="memory://", headers_enabled=True,
                   enabled=rate_limit is not None)


def install_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(e: ApiError):
        return jsonify(error=e.message), e.status

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        messages = {413: too_large().message, 429: f"too many requests ({e.description}); wait and try again",
                    404: "not found", 405: "method not allowed"}
        return jsonify(error=messages.get(e.code, e.name)), e.code

    @app.errorhandler(Exception)
    def internal_error(e: Exception):
        app.logger.exception("unexpected error")  # the details go to the log, never to the client
        return jsonify(error="internal error while processing the image"), 500


def security_headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def create_app(model_source: str = "fer2013", rate_limit: str | None = "60/minute", predictor=None) -> Flask:
    """One app per worker process; the model is loaded here, once (or passed in, for tests)."""
    rate_limit = parse_rate_limit(rate_limit)
    app = Flask(__name__)
    app.request_class = MemoryRequest
    app.json.sort_keys = False  # probabilities keep the model's class order
    app.config["MAX_CONTENT_LENGTH"] = MAX_FILE_BYTES + ENVELOPE
    predictor = predictor or load_predictor(model_source)
    info = model_info(predictor)
    warm_up()
    predictor.probabilities(np.zeros((1, *info["input"].values()), np.uint8))  # first run allocates; not a user's
    limiter = install_limiter(app, rate_limit)
    install_error_handlers(app)
    app.after_request(security_headers)

    def api_limit(view):
        return limiter.limit(rate_limit)(view) if rate_limit else view

    @app.get("/")
    def index():
        return render_template("index.html", info=info)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", model=info["file"])

    @app.get("/api/model")
    @api_limit
    def api_model():
        return jsonify(info)

    @app.post("/api/predict")
    @api_limit
    def api_predict():
        return jsonify(predict(predictor, read_upload(request.files)))

    # strong references: Flask-Limiter only keeps a weak one, and the decorators need it alive
    app.extensions["fixmatch"] = {"predictor": predictor, "limiter": limiter}
    return app
