"""The demo page in a real browser (Debian's Chromium driven by Playwright) against a live server."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serve_fixtures import face_jpeg, skimage_photo

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "benchmarks" / "screenshot_demo.png"


@pytest.fixture(scope="module")
def chromium_browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM}: install Debian's chromium (apt-get install chromium); .ci/run does")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pytest-playwright is not installed (dev extra)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def live_server(fer_model):
    """The app on a random free port of 127.0.0.1, served from a thread for the module."""
    from werkzeug.serving import make_server

    from fixmatch.serve import create_app

    server = make_server("127.0.0.1", 0, create_app(str(fer_model["onnx"]), rate_limit="off"), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def demo_page(chromium_browser, live_server):
    page = chromium_browser.new_page(viewport={"width": 1000, "height": 760})
    page.set_default_timeout(15_000)
    page.goto(live_server + "/")
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
    assert "not a jpeg or png" in demo_page.text_content("#error").lower()

    flat = tmp_path / "wall.jpg"
    Image.fromarray(np.full((240, 320), 140, np.uint8)).save(flat)
    demo_page.set_input_files("#file", str(flat))
    demo_page.wait_for_selector("#result:not([hidden])")
    assert demo_page.is_hidden("#error")
    assert "No face found" in demo_page.text_content("#face-note")
    assert demo_page.locator("#bars li").count() == 7


def test_fer_face_by_drag_and_drop(demo_page, fer_slice):
    """Drop a FER face JPEG on the drop zone (a synthetic drop event carrying the file)."""
    data = list(face_jpeg(fer_slice["x_test"][3]))
    demo_page.evaluate("""(bytes) => {
        const file = new File([new Uint8Array(bytes)], "face.jpg", {type: "image/jpeg"});
        const dt = new DataTransfer();
        dt.items.add(file);
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
    }""", data)
    demo_page.wait_for_selector("#result:not([hidden])")
    assert demo_page.locator("#bars li").count() == 7
