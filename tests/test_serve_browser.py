"""The drawing page in a real headless Chromium: ``pytest -q tests/test_serve_browser.py``.

Drives Debian's /usr/bin/chromium through Playwright (its own browser download is not available here; ``make
setup`` installs both). Draws digits with real pointer input (mouse, touch and pen through the DevTools input
domain), uploads a sample file, checks what the page shows against the API, and saves screenshots under
test-artifacts/.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from conftest import ROOT, SAMPLES
from test_serve import running_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                                                              "(make setup installs it)")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: run `bash scripts/setup-system.sh` (apt-get install chromium)",
                allow_module_level=True)

# Strokes in 0..1 canvas units, drawn as polylines.
SEVEN = [[(0.25, 0.2), (0.72, 0.2), (0.68, 0.3), (0.5, 0.58), (0.4, 0.82)]]
ONE = [[(0.52, 0.15), (0.5, 0.5), (0.48, 0.85)]]
FOUR = [[(0.36, 0.15), (0.28, 0.55), (0.72, 0.55)], [(0.6, 0.3), (0.6, 0.88)]]


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    with running_server(trained_run, tmp_path_factory.mktemp("browser") / "server.log", "--workers", "1") as (base, _):
        yield base


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1100, "height": 820})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console: {m.text}")
            if m.type == "error" and "Failed to load resource" not in m.text else None)  # 4xx replies are expected
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('model-info').textContent.includes('parameters')")
    yield page
    context.close()
    assert not problems, problems


def count(page) -> int:
    return int(page.get_attribute(".result", "data-count") or 0)


def wait_answer(page, before: int) -> None:
    """Until the page has had a reply after reply number ``before`` and no reply for newer strokes is due."""
    page.wait_for_function(
        "([n]) => { const r = document.querySelector('.result');"
        " return Number(r.dataset.count || 0) > n && ['done', 'error'].includes(r.dataset.state); }",
        arg=[before], timeout=60_000)


def canvas_box(page) -> dict:
    return page.locator("#canvas").bounding_box()


def draw_mouse(page, strokes) -> None:
    box = canvas_box(page)
    for stroke in strokes:
        xs = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*xs[0])
        page.mouse.down()
        for a, b in zip(xs, xs[1:]):
            page.mouse.move(*b, steps=8)
        page.mouse.up()


def draw_cdp(page, strokes, kind: str) -> None:
    """Touch or pen input, sent as the browser's own input events (so pointerType is touch/pen)."""
    cdp = page.context.new_cdp_session(page)
    box = canvas_box(page)
    for stroke in strokes:
        pts = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        path = [pts[0]] + [(a[0] + (b[0] - a[0]) * t / 8, a[1] + (b[1] - a[1]) * t / 8)
                           for a, b in zip(pts, pts[1:]) for t in range(1, 9)]
        if kind == "touch":
            for i, (x, y) in enumerate(path):
                kind_ = "touchStart" if i == 0 else "touchMove"
                cdp.send("Input.dispatchTouchEvent", {"type": kind_, "touchPoints": [{"x": x, "y": y}]})
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        else:
            for i, (x, y) in enumerate(path):
                cdp.send("Input.dispatchMouseEvent", {"type": "mousePressed" if i == 0 else "mouseMoved", "x": x,
                                                      "y": y, "button": "left", "buttons": 1, "clickCount": 1,
                                                      "pointerType": "pen"})
            cdp.send("Input.dispatchMouseEvent", {"type": "mouseReleased", "x": path[-1][0], "y": path[-1][1],
                                                  "button": "left", "buttons": 0, "clickCount": 1,
                                                  "pointerType": "pen"})


def shown(page) -> dict:
    return {"number": page.inner_text("#number").strip(), "bars": page.locator("#charts .bar").count(),
            "top": page.locator("#charts .bar.top .digit").all_inner_texts(),
            "seen": page.eval_on_selector_all("#inputs img", "ims => ims.map(i => [i.naturalWidth, i.naturalHeight])")}


def test_draw_a_seven_with_the_mouse(page):
    before = count(page)
    draw_mouse(page, SEVEN)
    wait_answer(page, before)
    got = shown(page)
    assert got == {"number": "7", "bars": 10, "top": ["7"], "seen": [[28, 28]]}, got
    assert "sure" in page.inner_text("#confidence")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-drawn-7.png"), full_page=True)

    page.click("#undo")  # the only stroke: back to the empty state
    assert page.inner_text("#number").strip() == "–" and page.locator("#charts .bar").count() == 0


def test_keyboard_controls(page):
    page.focus("#pen")
    page.keyboard.press("ArrowRight")
    assert page.inner_text("#pen-value") == "21"  # the slider works from the keyboard and says its value
    before = count(page)
    draw_mouse(page, FOUR)
    wait_answer(page, before)
    assert page.locator("#charts .bar").count() == 10
    page.keyboard.press("Control+z")  # undo one stroke of two: still a drawing, predicted again
    assert page.evaluate("document.getElementById('undo').disabled") is False
    page.keyboard.press("Escape")  # clear
    assert page.inner_text("#number").strip() == "–"
    assert page.evaluate("document.getElementById('undo').disabled") is True
    page.focus("#clear")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "file"  # the upload control is reachable by Tab


def test_upload_a_sample_file(page, server):
    sample = SAMPLES / "3_mnist_test_0030.png"
    api = httpx.post(server + "/api/predict", files={"file": (sample.name, sample.read_bytes(), "image/png")}).json()
    before = count(page)
    page.set_input_files("#file", str(sample))
    wait_answer(page, before)
    got = shown(page)
    assert got["number"] == api["number"] == "3" and got["bars"] == 10 and got["seen"] == [[28, 28]]
    shown_pct = page.locator("#charts .bar.top .pct").inner_text()
    assert shown_pct == f"{100 * api['confidence'][0]:.{0 if api['confidence'][0] >= 0.9995 else 1}f}%"

    tiff = io.BytesIO()  # a format Chromium cannot show: the canvas stays empty, the server still reads it
    Image.open(SAMPLES / "5_mnist_test_0015.png").save(tiff, "TIFF")
    api = httpx.post(server + "/api/predict", content=tiff.getvalue()).json()
    before = count(page)
    page.set_input_files("#file", files=[{"name": "five.tiff", "mimeType": "image/tiff", "buffer": tiff.getvalue()}])
    wait_answer(page, before)
    assert shown(page)["number"] == api["number"] and shown(page)["bars"] == 10 * len(api["digits"]) > 0

    before = count(page)
    page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    wait_answer(page, before)
    assert "not an image" in page.inner_text("#status")  # the API's 415 detail, shown to the user


def test_drop_an_image_file(page):
    sample = SAMPLES / "6_mnist_test_0021.png"
    before = count(page)
    page.evaluate("""([b64, name]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], name, { type: "image/png" }));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true,
                                                                             cancelable: true }));
    }""", [base64.b64encode(sample.read_bytes()).decode(), sample.name])
    wait_answer(page, before)
    got = shown(page)
    assert got["bars"] == 10 and got["seen"] == [[28, 28]] and got["number"].isdigit()


def test_renders_several_digits_and_a_verdict(page):
    """A reply with several digits, one unsure (Prediction's verdict, status and reasons) is shown as such."""
    probs = [[0.01] * 10, [0.05] * 10]
    probs[0][4], probs[1][2] = 0.91, 0.55
    page.evaluate("(d) => render(d)", {"number": "42", "digits": [4, 2], "confidence": [0.91, 0.55],
                                      "probabilities": probs, "inputs_png": [], "verdict": "unsure",
                                      "status": ["ok", "unsure"], "reasons": ["", "low confidence"],
                                      "timing_ms": {"predict": 1.0, "total": 2.0}})
    assert page.inner_text("#number") == "42"
    assert page.locator("#charts .chart").count() == 2 and page.locator("#charts .bar").count() == 20
    assert page.inner_text("#verdict") == "unsure: low confidence" and page.is_visible("#verdict")
    assert page.locator("#charts h3").all_inner_texts()[1].endswith("(unsure: low confidence)")
    assert "unsure" in page.get_attribute("#number", "class")
    page.evaluate("(d) => render(d)", {"number": "4", "digits": [4], "confidence": [0.91],
                                      "probabilities": probs[:1], "verdict": "ok", "status": ["ok"]})
    assert not page.is_visible("#verdict") and "unsure" not in page.get_attribute("#number", "class")
    page.evaluate("(d) => render(d)", {"number": "42", "digits": [4, 2], "confidence": [0.91, 0.55],
                                      "probabilities": probs, "verdict": "unsure", "status": ["ok", "unsure"],
                                      "reasons": ["", "low confidence"]})
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-two-digits-unsure.png"), full_page=True)


@pytest.mark.parametrize("kind", ["touch", "pen"])
def test_phone_width_touch_and_pen(browser, server, kind):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, has_touch=True,
                                  is_mobile=True)
    page = context.new_page()
    page.goto(server + "/")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways at phone width ({width} px)"
    before = count(page)
    draw_cdp(page, ONE, kind)
    wait_answer(page, before)
    assert shown(page)["number"] == "1"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"serve-phone-{kind}-1.png"), full_page=True)
    context.close()



def test_the_api_docs_page_works_offline(browser, server):
    """/docs (Swagger UI) renders the API from the app's own assets: every request off 127.0.0.1 is refused."""
    context = browser.new_context()
    outside: list[str] = []

    def only_local(route):
        if route.request.url.startswith(server):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.goto(server + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    assert page.locator(".opblock-summary-path", has_text="/api/predict").count() == 1
    assert not outside, outside
    context.close()
