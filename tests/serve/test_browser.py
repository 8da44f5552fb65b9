"""The demo page in a real browser (Debian's Chromium driven by Playwright) against a live server."""

from __future__ import annotations

import io
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from repo import REPO
from serve_fixtures import face_jpeg, skimage_photo

pytestmark = pytest.mark.slow  # a real Chromium against a live server

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_SCREENSHOT = REPO / "benchmarks" / "screenshot_demo.png"


@pytest.fixture(scope="module")
def chromium_browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM}: install Debian's chromium (apt-get install chromium); .ci/run does")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pytest-playwright is not installed (dev extra)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def serve_in_thread(model):
    """The app on a random free port of 127.0.0.1, served from a thread -> (base URL, server)."""
    from werkzeug.serving import make_server

    from fixmatch.serve import create_app

    server = make_server("127.0.0.1", 0, create_app(str(model), rate_limit="off"), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


@pytest.fixture(scope="module")
def live_server(fer_model):
    base, server = serve_in_thread(fer_model["onnx"])
    yield base
    server.shutdown()


def open_page(browser, base):
    page = browser.new_page(viewport={"width": 1000, "height": 760})
    page.set_default_timeout(15_000)
    page.goto(base + "/")
    return page


@pytest.fixture
def demo_page(chromium_browser, live_server):
    page = open_page(chromium_browser, live_server)
    yield page
    page.close()


def test_upload_face_then_too_large_file(demo_page, fer_slice, tmp_path):
    astronaut = tmp_path / "astronaut.jpg"
    Image.open(skimage_photo("astronaut.png")).convert("RGB").save(astronaut, quality=90)
    demo_page.set_input_files("#file", str(astronaut))
    demo_page.wait_for_selector("#result:not([hidden])")
    assert demo_page.text_content("#label") in {"Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"}
    assert demo_page.locator("#bars li").count() == 7
    assert "Face found" in demo_page.text_content("#face-note")
    assert demo_page.text_content("#headline").startswith("Expression: ")
    assert demo_page.evaluate("document.getElementById('preview').width") > 0
    shot = tmp_path / "demo.png"
    demo_page.screenshot(path=str(shot), full_page=True)
    if not DOCS_SCREENSHOT.exists():  # once, for the docs; delete the file to refresh it
        shutil.copy(shot, DOCS_SCREENSHOT)

    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8\xff\xe0" + bytes(2 * 1024 * 1024))
    demo_page.set_input_files("#file", str(big))
    demo_page.wait_for_selector("#error:not([hidden])")
    assert "limit is 1 MB" in demo_page.text_content("#error")
    assert demo_page.is_hidden("#result")
    demo_page.screenshot(path=str(tmp_path / "error.png"), full_page=True)


def test_not_an_image_and_no_face(demo_page, tmp_path):
    text = tmp_path / "notes.png"
    text.write_bytes(b"just some text, whatever the name says")
    demo_page.set_input_files("#file", str(text))
    demo_page.wait_for_selector("#error:not([hidden])")
    assert "not an image in a format read here" in demo_page.text_content("#error").lower()

    flat = tmp_path / "wall.jpg"
    Image.fromarray(np.full((240, 320), 140, np.uint8)).save(flat)
    demo_page.set_input_files("#file", str(flat))
    demo_page.wait_for_selector("#result:not([hidden])")
    assert demo_page.is_hidden("#error")
    # no face: the headline says so, and names no expression; the centre crop's bars are dimmed
    assert demo_page.text_content("#headline") == "No face found"
    assert demo_page.locator("#label").count() == 0
    assert "for reference only" in demo_page.text_content("#face-note")
    assert "secondary" in demo_page.get_attribute("#bars", "class")
    assert demo_page.locator("#bars li").count() == 7


def test_phone_photo_is_scaled_down_in_the_browser(demo_page, tmp_path):
    """A 4000x3000, >3 MB photo: the page sends a smaller copy (the server's limit stays 1 MB)."""
    rng = np.random.default_rng(0)
    face = Image.open(skimage_photo("astronaut.png")).convert("RGB").resize((3000, 3000), Image.BICUBIC)
    canvas = Image.new("RGB", (4000, 3000), (90, 110, 130))
    canvas.paste(face, (500, 0))
    noisy = np.clip(np.asarray(canvas, np.int16) + rng.normal(0, 10, (3000, 4000, 3)), 0, 255).astype(np.uint8)
    photo = tmp_path / "phone.jpg"
    Image.fromarray(noisy).save(photo, quality=92)
    assert photo.stat().st_size > 3 * 1024 * 1024
    sent = []
    demo_page.on(
        "request", lambda r: sent.append(len(r.post_data_buffer or b"")) if r.url.endswith("/api/predict") else None
    )
    demo_page.set_input_files("#file", str(photo))
    demo_page.wait_for_selector("#result:not([hidden])")
    assert demo_page.is_hidden("#error")
    assert "Face found" in demo_page.text_content("#face-note")
    assert sent and max(sent) < 1024 * 1024


def test_fer_face_by_drag_and_drop(demo_page, fer_slice):
    """Drop a FER face JPEG on the drop zone (a synthetic drop event carrying the file)."""
    data = list(face_jpeg(fer_slice["x_test"][3]))
    demo_page.evaluate(
        """(bytes) => {
        const file = new File([new Uint8Array(bytes)], "face.jpg", {type: "image/jpeg"});
        const dt = new DataTransfer();
        dt.items.add(file);
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
    }""",
        data,
    )
    demo_page.wait_for_selector("#result:not([hidden])")
    assert demo_page.locator("#bars li").count() == 7


def test_a_model_that_is_not_about_faces(chromium_browser, digits_model, tmp_path):
    """The page of any served model: its title and classes, its prediction as the headline, no face talk."""
    base, server = serve_in_thread(digits_model["onnx"])
    page = open_page(chromium_browser, base)
    try:
        assert page.text_content("h1") == "Image classification"
        assert "0, 1, 2, 3" in page.text_content("footer") and "face" not in page.text_content("main").lower()
        digit = tmp_path / "digit.png"
        Image.fromarray(np.kron(digits_model["x_test"][0, 0], np.ones((12, 12), np.uint8))).save(digit)
        page.set_input_files("#file", str(digit))
        page.wait_for_selector("#result:not([hidden])")
        assert page.text_content("#headline").startswith("Prediction: ")
        assert page.text_content("#label") in digits_model["class_names"]
        assert page.is_hidden("#face-note") and page.locator("#bars li").count() == 10
    finally:
        page.close()
        server.shutdown()


def test_the_page_loads_without_a_404_and_takes_webp_and_bmp(chromium_browser, live_server, fer_slice, tmp_path):
    """Every request the page makes on load is answered (the favicon too); the file picker offers
    WebP and BMP, which the server decodes."""
    page = chromium_browser.new_page(viewport={"width": 1000, "height": 760})
    failed = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    try:
        page.set_default_timeout(15_000)
        page.goto(live_server + "/", wait_until="networkidle")
        assert not failed, failed
        assert page.evaluate("fetch('/favicon.ico').then(r => r.status)") == 200
        accept = page.get_attribute("#file", "accept")
        assert {"image/webp", "image/bmp"} <= set(accept.split(","))
        for fmt in ("WEBP", "BMP"):
            path = tmp_path / f"face.{fmt.lower()}"
            Image.open(io.BytesIO(face_jpeg(fer_slice["x_test"][3]))).save(path, fmt)
            page.set_input_files("#file", str(path))
            page.wait_for_selector("#result:not([hidden])")
            assert page.is_hidden("#error") and page.locator("#bars li").count() == 7
            page.evaluate("document.getElementById('result').hidden = true")
    finally:
        page.close()


def test_a_small_image_fills_its_preview(demo_page, fer_slice, tmp_path):
    """A 48x48 face is shown as large as its column allows, not as a speck beside the scores."""
    face = tmp_path / "face48.png"
    Image.fromarray(fer_slice["x_test"][3]).save(face)
    demo_page.set_input_files("#file", str(face))
    demo_page.wait_for_selector("#result:not([hidden])")
    shown = demo_page.evaluate(
        """() => {
        const c = document.getElementById("preview").getBoundingClientRect();
        const column = document.querySelector(".preview").getBoundingClientRect();
        return [c.width, column.width];
    }"""
    )
    assert shown[0] >= 0.95 * min(shown[1], 480), shown
