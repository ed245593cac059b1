"""The web page, driven in a real headless Chromium against the real API started as a subprocess.

Needs the `chromium` binary (Debian: `apt-get install -y chromium chromium-driver`); Playwright's own
browser download is never used. Screenshots of the desktop and phone layouts go to /tmp/web-*.png.
"""

from __future__ import annotations

import base64
import json
import math
import mimetypes
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, FilePayload, Locator, Page, Request, expect, sync_playwright

from support import free_port, require_binary, wait_http

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_TIMEOUT_S = 120
# Small enough that a handful of photos needs several batch requests (the page must split them).
MAX_BATCH_FILES = 4
SCREENSHOT_DIR = Path("/tmp")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 667}

# Full-size photos run through the model on a busy CI machine: allow more than Playwright's 5 s.
expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real `catsdogs serve` on a free local port, ready to predict."""
    executable = Path(sys.executable).with_name("catsdogs")  # the console script of this venv
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("web-server") / "server.log"
    env = {**os.environ, "CATSDOGS_MAX_BATCH_FILES": str(MAX_BATCH_FILES), "CATSDOGS_LOG_FORMAT": "text"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(executable), "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_http(f"{base}/ready", timeout=SERVER_START_TIMEOUT_S, process=process, logs=log_path.read_text)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = require_binary("chromium", "apt-get install -y chromium chromium-driver")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _payload(path: Path) -> FilePayload:
    # Playwright refuses a mix of paths and buffers in one selection: send everything as buffers.
    return {"name": path.name, "mimeType": mimetypes.guess_type(path.name)[0] or "", "buffer": path.read_bytes()}


@dataclass
class UI:
    """One browser tab on the page, with every request it made and every uncaught script error."""

    page: Page
    base: str
    requests: list[Request] = field(default_factory=list)
    script_errors: list[str] = field(default_factory=list)

    def upload(self, *files: Path | FilePayload) -> None:
        """Pick files in the page's file input, as a person would (paths and in-memory files mixed)."""
        payloads = [_payload(f) if isinstance(f, Path) else f for f in files]
        self.page.locator("#file-input").set_input_files(payloads)

    def card(self, filename: str) -> Locator:
        return self.page.locator(f'.card[data-filename="{filename}"]')

    def predict_requests(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == "POST" and urlsplit(r.url).path == path]


@pytest.fixture
def open_ui(browser: Browser, server: str) -> Iterator[Callable[..., UI]]:
    """Open the page in a fresh browser context (desktop by default) and wait for the API info."""
    contexts = []
    uis: list[UI] = []

    def _open(viewport: dict[str, int] = DESKTOP, path: str = "/ui", **context_options: Any) -> UI:
        context = browser.new_context(viewport=viewport, service_workers="block", **context_options)
        contexts.append(context)
        page = context.new_page()
        ui = UI(page=page, base=server)
        context.on("request", lambda request: ui.requests.append(request))
        page.on("pageerror", lambda error: ui.script_errors.append(str(error)))
        page.goto(server + path)
        expect(page.locator("#version")).to_contain_text("model")
        uis.append(ui)
        return ui

    yield _open
    for context in contexts:
        context.close()
    errors = [error for ui in uis for error in ui.script_errors]
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def ui(open_ui: Callable[..., UI]) -> UI:
    return open_ui()


def _bar_fraction(card: Locator, class_name: str) -> float:
    """Drawn width of a probability bar's fill, as a fraction of its track."""
    bar = card.locator(f'.bar[data-class="{class_name}"]')
    fill = bar.locator(".bar-fill").bounding_box()
    track = bar.locator(".bar-track").bounding_box()
    assert fill is not None and track is not None and track["width"] > 50
    return fill["width"] / track["width"]


def _expect_prediction_shown(card: Locator, result: dict[str, Any], batch_images: int = 1) -> None:
    """The card shows exactly what the API answered: label, bars, confidence and the time per photo."""
    expect(card).to_have_attribute("data-state", "done")
    if result.get("is_cat_or_dog") is False or result.get("uncertain") is True:
        expect(card).not_to_have_attribute("data-verdict", "sure")
    else:
        expect(card).to_have_attribute("data-verdict", "sure")
        expect(card.locator(".label")).to_have_text(f"Prediction: {result['prediction'].capitalize()}")
    assert sorted(result["probabilities"]) == ["cat", "dog"]
    if result.get("is_cat_or_dog") is not False:
        for class_name, probability in result["probabilities"].items():
            assert _bar_fraction(card, class_name) == pytest.approx(probability, abs=0.01)
            bar_value = card.locator(f'.bar[data-class="{class_name}"] .bar-value')
            expect(bar_value).to_have_text(f"{probability * 100:.1f}%")
    expect(card.locator(".meta")).to_contain_text(f"Confidence {result['confidence'] * 100:.1f}%")
    if batch_images == 1:
        expect(card.locator(".meta")).to_contain_text(f"{result['inference_time_ms']:.1f} ms")
    else:
        per_image = result["inference_time_ms"] / batch_images
        expect(card.locator(".meta")).to_contain_text(f"≈ {per_image:.1f} ms per photo (batch of {batch_images})")
    # The thumbnail is the uploaded photo itself, decoded by the browser.
    assert card.locator(".thumb img").evaluate("img => img.complete && img.naturalWidth > 0")


def _error_message(body: dict[str, Any]) -> str:
    """The human sentence of an API error body, in either shape the API has used."""
    detail = body["detail"]
    return detail["message"] if isinstance(detail, dict) else detail


def _error_code(body: dict[str, Any]) -> str:
    detail = body["detail"]
    return detail["code"] if isinstance(detail, dict) else body["code"]


def _served_model_accuracy(base: str) -> float:
    """Test accuracy recorded in the served bundle's model.json (models/ unless CATSDOGS_MODEL_PATH says else)."""
    metrics = httpx.get(base + "/model").json().get("metrics") or {}
    return float(metrics.get("accuracy") or 0.0)


# --- tests -----------------------------------------------------------------------------


def test_header_speaks_plainly_with_the_versions_one_click_away(ui: UI) -> None:
    info = httpx.get(ui.base + "/", headers={"Accept": "application/json"}).json()
    model = httpx.get(ui.base + "/model").json()
    accuracy = math.floor(model["metrics"]["accuracy"] * 100)  # never overstated
    expect(ui.page.locator("#service")).to_have_text(
        f"Ready. Right about {accuracy} times in 100 on test photos it had never seen."
    )
    version = ui.page.locator("#version")
    expect(version).to_be_hidden()  # jargon stays out of the way ...
    ui.page.get_by_text("Technical details").click()  # ... until asked for
    expect(version).to_be_visible()
    expect(version).to_contain_text(f"API {info['version']}")
    expect(version).to_contain_text(f"model {model.get('version', info['model_version'])}")
    expect(version).to_contain_text(model["backend"])
    expect(ui.page).to_have_title("Cats vs Dogs")


def test_root_serves_the_page_to_browsers(open_ui: Callable[..., UI]) -> None:
    ui = open_ui(path="/")
    expect(ui.page.get_by_role("heading", level=1)).to_have_text("Cats vs Dogs")


def test_single_photo_shows_label_and_probability_bars(ui: UI, uploads_dir: Path) -> None:
    photo = uploads_dir / "cat.4001.jpg"
    expect(ui.page.locator("#clear")).to_be_hidden()  # nothing to clear yet
    with ui.page.expect_response(lambda r: urlsplit(r.url).path == "/predict") as response_info:
        ui.upload(photo)
    response = response_info.value
    assert response.status == 200
    result = response.json()
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    _expect_prediction_shown(ui.card(photo.name), result)
    # One file goes to /predict, never to the batch endpoint.
    assert len(ui.predict_requests("/predict")) == 1
    assert ui.predict_requests("/predict/batch") == []
    expect(ui.page.locator("#status")).to_have_text("Classified 1 photo.")


def test_dropped_photo_is_classified(ui: UI, uploads_dir: Path) -> None:
    photo = uploads_dir / "dog.4006.jpg"
    page = ui.page
    # A real drag of OS files cannot be scripted; dispatch the same events with a DataTransfer holding the photo.
    page.evaluate(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], name, { type: "image/jpeg" }));
            const zone = document.getElementById("dropzone");
            zone.dispatchEvent(new DragEvent("dragenter", { dataTransfer: data, bubbles: true, cancelable: true }));
            window.__draggingShown = zone.classList.contains("dragging");
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
        }""",
        [photo.name, base64.b64encode(photo.read_bytes()).decode()],
    )
    assert page.evaluate("window.__draggingShown") is True
    expect(page.locator("#dropzone")).not_to_have_class(re.compile(r"\bdragging\b"))
    expect(ui.card(photo.name)).to_have_attribute("data-state", "done")
    assert len(ui.predict_requests("/predict")) == 1


def test_trained_model_labels_cats_and_dogs(ui: UI, uploads_dir: Path) -> None:
    photos = [uploads_dir / f"{kind}.{n}.jpg" for kind in ("cat", "dog") for n in range(4001, 4006)]
    ui.upload(*photos)
    expect(ui.page.locator('.card[data-state="done"]')).to_have_count(len(photos))
    right = {"cat": 0, "dog": 0}
    for photo in photos:
        truth = photo.name.split(".")[0]
        if ui.card(photo.name).get_attribute("data-prediction") == truth:
            right[truth] += 1
    # A trained model (>= 90 % test accuracy) gets clear photos of each class mostly right.
    assert right["cat"] >= 4 and right["dog"] >= 4, f"right answers per class out of 5: {right}"


def test_text_file_is_rejected_in_the_browser(ui: UI, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("buy cat food\n")
    ui.upload(notes)
    card = ui.card("notes.txt")
    expect(card).to_have_attribute("data-state", "error")
    expect(card.locator(".error-message")).to_have_text(re.compile(r"^the file is not an image"))
    expect(card.locator(".filename")).to_have_text("notes.txt")  # the name once, above the message
    expect(card.locator(".label")).to_have_count(0)
    expect(ui.page.locator("#status")).to_contain_text("1 file was rejected")
    # Obviously not an image: rejected before any upload.
    assert ui.predict_requests("/predict") == [] and ui.predict_requests("/predict/batch") == []


def test_server_rejection_of_a_fake_image_is_shown(ui: UI) -> None:
    fake: FilePayload = {"name": "holiday.jpg", "mimeType": "image/jpeg", "buffer": b"this is text, not a JPEG\n" * 8}
    with ui.page.expect_response(lambda r: urlsplit(r.url).path == "/predict") as response_info:
        ui.upload(fake)
    response = response_info.value
    assert response.status == 400
    body = response.json()
    card = ui.card("holiday.jpg")
    expect(card).to_have_attribute("data-state", "error")
    expect(card.locator(".error-message")).to_have_text(_error_message(body))
    expect(card).to_have_attribute("data-error-code", _error_code(body))
    expect(card).to_contain_text("holiday.jpg")
    assert card.inner_text().count("holiday.jpg") == 1  # never the file name twice


def test_several_files_get_one_card_each(ui: UI, uploads_dir: Path) -> None:
    photos = [uploads_dir / "cat.4002.jpg", uploads_dir / "dog.4002.jpg", uploads_dir / "dog.4003.jpg"]
    broken: FilePayload = {"name": "broken.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\n" + b"\0" * 64}
    notes: FilePayload = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo\n"}
    with ui.page.expect_response(lambda r: urlsplit(r.url).path == "/predict/batch") as response_info:
        ui.upload(*photos, broken, notes)
    body = response_info.value.json()
    results = {entry["filename"]: entry for entry in body["results"]}
    # The text file never left the browser; the rest went in one batch request.
    assert sorted(results) == sorted([p.name for p in photos] + ["broken.png"])
    expect(ui.page.locator(".card")).to_have_count(5)
    for photo in photos:
        # The three photos shared one model run; each card shows its share, labelled as such.
        _expect_prediction_shown(ui.card(photo.name), results[photo.name], batch_images=len(photos))
    expect(ui.card("broken.png")).to_have_attribute("data-state", "error")
    expect(ui.card("broken.png").locator(".error-message")).to_have_text(results["broken.png"]["error"]["message"])
    expect(ui.card("notes.txt").locator(".error-message")).to_contain_text("the file is not an image")
    expect(ui.page.locator("#status")).to_have_text("Classified 3 photos; 2 files were rejected.")
    ui.page.screenshot(path=str(SCREENSHOT_DIR / "web-desktop.png"), full_page=True)
    ui.page.get_by_role("button", name="Clear results").click()
    expect(ui.page.locator(".card")).to_have_count(0)
    expect(ui.page.locator("#clear")).to_be_hidden()
    expect(ui.page.get_by_label("Choose photos")).to_be_focused()


def test_more_files_than_the_batch_limit_are_split(ui: UI, uploads_dir: Path) -> None:
    photos = sorted(uploads_dir.glob("*.jpg"))[: MAX_BATCH_FILES * 2 + 1]
    ui.upload(*photos)
    expect(ui.page.locator('.card[data-state="done"]')).to_have_count(len(photos))
    responses = [r.response() for r in ui.predict_requests("/predict/batch")]
    assert all(responses)
    # The server refuses the whole selection (413 too_many_files, "at most N"); the page re-sends it in parts.
    assert [r.status for r in responses] == [413, 200, 200, 200]
    assert _error_code(responses[0].json()) == "too_many_files"
    assert [len(r.json()["results"]) for r in responses[1:]] == [MAX_BATCH_FILES, MAX_BATCH_FILES, 1]
    expect(ui.page.locator("#status")).to_have_text(f"Classified {len(photos)} photos.")


def test_phone_layout_has_no_horizontal_overflow(open_ui: Callable[..., UI], uploads_dir: Path) -> None:
    ui = open_ui(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    long_name: FilePayload = {
        "name": "a-very-long-file-name-from-a-phone-camera-IMG_20240101_123456789_HDR_portrait.jpg",
        "mimeType": "image/jpeg",
        "buffer": (uploads_dir / "dog.4004.jpg").read_bytes(),
    }
    ui.upload(uploads_dir / "cat.4003.jpg", long_name, {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"x"})
    expect(ui.page.locator('.card[data-state="done"]')).to_have_count(2)
    width = ui.page.evaluate("() => ({scroll: document.documentElement.scrollWidth, client: window.innerWidth})")
    assert width["scroll"] <= width["client"] == PHONE["width"], width
    for box in (ui.page.locator(".card").nth(i).bounding_box() for i in range(3)):
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    ui.page.screenshot(path=str(SCREENSHOT_DIR / "web-phone.png"), full_page=True)


def test_file_picker_is_keyboard_usable_and_results_are_announced(ui: UI, uploads_dir: Path) -> None:
    page = ui.page
    # Playwright turns on file-chooser interception asynchronously when the first listener is added; adding
    # one now, several round trips before the key press, keeps the chooser from going to a native dialog.
    page.on("filechooser", lambda chooser: None)
    picker = page.get_by_label("Choose photos")
    expect(picker).to_have_attribute("type", "file")
    expect(page.locator("#results")).to_have_attribute("aria-live", "polite")
    page.keyboard.press("Tab")  # the header's "Technical details" comes first in reading order
    expect(page.locator(".tech summary")).to_be_focused()
    page.keyboard.press("Tab")
    expect(picker).to_be_focused()
    with page.expect_file_chooser() as chooser_info:
        page.keyboard.press("Space")
    chooser = chooser_info.value
    assert chooser.is_multiple()
    chooser.set_files(uploads_dir / "dog.4005.jpg")
    expect(ui.card("dog.4005.jpg")).to_have_attribute("data-state", "done")


def test_no_request_leaves_the_test_server(ui: UI, uploads_dir: Path) -> None:
    ui.upload(uploads_dir / "cat.4004.jpg", uploads_dir / "dog.4001.jpg")
    expect(ui.page.locator('.card[data-state="done"]')).to_have_count(2)
    ui.page.reload()
    expect(ui.page.locator("#version")).to_contain_text("model")
    origin = urlsplit(ui.base).netloc
    urls = [r.url for r in ui.requests]
    assert len(urls) >= 6  # page, script, style, icon, API info, predictions
    outside = [u for u in urls if not (urlsplit(u).netloc == origin or u.startswith(("data:", f"blob:{ui.base}/")))]
    assert outside == [], outside


# --- API reference pages (issue 11): they must render with no network beyond this machine ----------------------
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_api_docs_render_offline(browser: Browser, server: str, path: str) -> None:
    spec = httpx.get(server + "/openapi.json").json()
    summaries = [op["summary"] for item in spec["paths"].values() for op in item.values() if "summary" in op]
    assert len(summaries) >= 8
    context = browser.new_context(viewport=DESKTOP, service_workers="block")
    blocked: list[str] = []

    def loopback_only(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOOPBACK_HOSTS or url.startswith(("data:", "blob:")):
            route.continue_()
        else:  # what a machine without internet would do to a CDN request
            blocked.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", loopback_only)
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    try:
        page.goto(server + path)
        # Swagger UI shows one block per operation with its summary; ReDoc one heading per operation.
        operations = page.locator(".opblock-summary-description" if path == "/docs" else "h2")
        for summary in summaries:
            expect(operations.filter(has_text=summary).first).to_be_visible()
        page.screenshot(path=str(SCREENSHOT_DIR / f"web-docs{path.replace('/', '-')}.png"))
    finally:
        context.close()
    assert blocked == [], f"{path} tried to reach the network: {blocked}"
    assert script_errors == [], script_errors


# --- states that depend on the model's judgement: /predict answered by the test, the page is real -------


def _prediction(prediction: str, p_cat: float, **fields: Any) -> dict[str, Any]:
    probabilities = {"cat": p_cat, "dog": round(1 - p_cat, 6)}
    return {
        "prediction": prediction,
        "probability": probabilities[prediction],
        "confidence": probabilities[prediction],
        "probabilities": probabilities,
        "inference_time_ms": 12.0,
        "model_version": "1.0.0-test",
        "is_cat_or_dog": True,
        "pet_score": 0.9,
        "uncertain": False,
        "reason": None,
        **fields,
    }


def _answer_predict_with(ui: UI, path: str, body: dict[str, Any]) -> None:
    ui.page.route(
        f"{ui.base}{path}",
        lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(body)),
    )


def _photo(uploads_dir: Path, name: str, as_name: str) -> FilePayload:
    return {"name": as_name, "mimeType": "image/jpeg", "buffer": (uploads_dir / name).read_bytes()}


def test_unsure_answer_says_not_sure(ui: UI, uploads_dir: Path) -> None:
    reason = "The model is not confident: it could be either."
    _answer_predict_with(ui, "/predict", _prediction("cat", 0.55, uncertain=True, reason=reason))
    ui.upload(_photo(uploads_dir, "cat.4001.jpg", "blue-square.jpg"))
    card = ui.card("blue-square.jpg")
    expect(card).to_have_attribute("data-verdict", "unsure")
    expect(card.locator(".label")).to_have_text("Prediction: Not sure · maybe a cat")
    expect(card.locator(".label")).not_to_have_class(re.compile(r"label-cat"))  # not the confident look
    expect(card.locator(".reason")).to_have_text(reason)
    expect(card.locator('.bar[data-class="cat"] .bar-value')).to_have_text("55.0%")
    ui.page.screenshot(path=str(SCREENSHOT_DIR / "web-unsure.png"))


def test_not_a_pet_answer_says_so_with_the_reason(ui: UI, uploads_dir: Path) -> None:
    reason = "This looks like a landscape, not a cat or a dog."
    _answer_predict_with(
        ui, "/predict", _prediction("dog", 0.28, is_cat_or_dog=False, pet_score=0.03, uncertain=True, reason=reason)
    )
    ui.upload(_photo(uploads_dir, "dog.4001.jpg", "noise.jpg"))
    card = ui.card("noise.jpg")
    expect(card).to_have_attribute("data-verdict", "not-pet")
    expect(card.locator(".label")).to_have_text("Prediction: This doesn't look like a cat or a dog")
    expect(card.locator(".reason")).to_have_text(reason)
    expect(card.locator(".bars")).to_have_count(0)  # no "Dog 72 %" for noise
    expect(card.locator(".meta")).to_have_text("model 12.0 ms")
    ui.page.screenshot(path=str(SCREENSHOT_DIR / "web-not-a-pet.png"))
    expect(ui.page.locator("#status")).to_have_text("Classified 1 photo.")


def test_not_a_pet_answer_says_what_it_looks_like(ui: UI, uploads_dir: Path) -> None:
    reason = "this looks like a horse, not a cat or a dog"
    fields = {"is_cat_or_dog": False, "pet_score": 0.02, "reason": reason, "looks_like": "horse"}
    _answer_predict_with(ui, "/predict", _prediction("dog", 0.3, **fields, looks_like_kind="animal"))
    ui.upload(_photo(uploads_dir, "dog.4001.jpg", "horse.jpg"))
    card = ui.card("horse.jpg")
    expect(card).to_have_attribute("data-verdict", "not-pet")
    expect(card.locator(".label")).to_have_text("Prediction: This looks like a horse, not a cat or a dog")
    expect(card.locator(".reason")).to_have_count(0)  # the headline already says it
    expect(card.locator(".bars")).to_have_count(0)
    ui.page.screenshot(path=str(SCREENSHOT_DIR / "web-looks-like.png"))


def test_confident_answer_keeps_the_plain_label(ui: UI, uploads_dir: Path) -> None:
    _answer_predict_with(ui, "/predict", _prediction("dog", 0.02))
    ui.upload(_photo(uploads_dir, "dog.4002.jpg", "rex.jpg"))
    card = ui.card("rex.jpg")
    expect(card).to_have_attribute("data-verdict", "sure")
    expect(card.locator(".label")).to_have_text("Prediction: Dog")
    expect(card.locator(".reason")).to_have_count(0)
    expect(card.locator(".meta")).to_have_text("Confidence 98.0% · model 12.0 ms")


def test_batch_cards_show_their_own_time(ui: UI, uploads_dir: Path) -> None:
    names = ["a.jpg", "b.jpg", "c.jpg"]
    first_run = [_prediction("cat", 0.9, inference_time_ms=30.0), _prediction("dog", 0.1, inference_time_ms=30.0)]
    results = [
        {"filename": n, **r}
        for n, r in zip(names, [*first_run, _prediction("cat", 0.8, per_image_ms=4.2)], strict=True)
    ]
    _answer_predict_with(ui, "/predict/batch", {"results": results, "model_version": "1.0.0-test"})
    ui.upload(*(_photo(uploads_dir, "cat.4003.jpg", n) for n in names))
    expect(ui.page.locator('.card[data-state="done"]')).to_have_count(3)
    # Two photos from one 30 ms run: 15 ms each, said to be a share of a batch; a per-item time is shown as is.
    expect(ui.card("a.jpg").locator(".meta")).to_contain_text("≈ 15.0 ms per photo (batch of 2)")
    expect(ui.card("b.jpg").locator(".meta")).to_contain_text("≈ 15.0 ms per photo (batch of 2)")
    expect(ui.card("c.jpg").locator(".meta")).to_have_text("Confidence 80.0% · model 4.2 ms")
    expect(ui.card("a.jpg").locator(".meta")).to_have_attribute("title", re.compile("one model run of 30.0 ms"))
