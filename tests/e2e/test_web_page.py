"""The gateway's web page in headless Chromium against a real model server and gateway."""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from clothing_tools.local_stack import Running
from tests.e2e.support import KEY, WRONG_KEY
from tests.helpers import REPO_ROOT

ARTIFACTS = REPO_ROOT / "artifacts" / "web"
DESKTOP = {"width": 1000, "height": 900}
PHONE = {"width": 375, "height": 740}
WAIT_MS = 60_000

pytestmark = pytest.mark.slow


# --- the browser -------------------------------------------------------------------------------


@pytest.fixture
def page(browser: Any, gateway_url: str) -> Iterator[Any]:
    """A fresh desktop-sized tab on the gateway's page; fails the test on any script error or
    anything the page's Content-Security-Policy refused."""
    context = browser.new_context(viewport=DESKTOP)
    tab = context.new_page()
    script_errors: list[str] = []
    tab.on("pageerror", lambda exc: script_errors.append(str(exc)))
    tab.on("console", lambda message: csp_violation(message, script_errors))
    tab.set_default_timeout(WAIT_MS)
    tab.goto(gateway_url + "/")
    yield tab
    context.close()
    assert script_errors == []


def csp_violation(message: Any, found: list[str]) -> None:
    """Chromium reports what a Content-Security-Policy blocked as a console error."""
    if message.type == "error" and "Content Security Policy" in message.text:
        found.append(message.text)


# --- a loopback image host ---------------------------------------------------------------------


@dataclass
class ImageHost:
    """Serves one photo on loopback; `/gateway-only.jpg` refuses browsers (Chrome user agents)."""

    photo: bytes
    base_url: str = ""

    def url(self, path: str) -> str:
        return self.base_url + path


@pytest.fixture(scope="session")
def image_host(photo: Photo) -> Iterator[ImageHost]:
    """A real HTTP server on 127.0.0.1 serving the chosen photo."""
    host = ImageHost(photo.data)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            browser = "Chrome" in self.headers.get("User-Agent", "")
            if self.path == "/photo.jpg" or (self.path == "/gateway-only.jpg" and not browser):
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(host.photo)))
                self.end_headers()
                self.wfile.write(host.photo)
            else:
                self.send_error(403 if self.path == "/gateway-only.jpg" else 404)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host.base_url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield host
    finally:
        server.shutdown()
        server.server_close()


# --- the photo and the API's own answer --------------------------------------------------------


@dataclass(frozen=True)
class Photo:
    """A real photo, its folder's class and the gateway API's answer for it."""

    path: Path
    data: bytes
    true_class: str
    answer: dict[str, Any]


def api_upload(gateway_url: str, name: str, data: bytes) -> dict[str, Any]:
    """The gateway API's answer for an uploaded photo."""
    response = requests.post(
        gateway_url + "/predict", files={"file": (name, data, "image/jpeg")}, timeout=60
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.fixture(scope="session")
def photo(gateway_url: str, dataset_dir: Path) -> Photo:
    """The first validation photo (one per class, in order) the served model gets right.

    A photo the model gets right makes the screenshot meaningful; the page is checked against the
    API's answer either way, so a weak model still gives a real test.
    """
    candidates = []
    for class_dir in sorted(p for p in (dataset_dir / "validation").iterdir() if p.is_dir()):
        first = sorted(class_dir.glob("*.jpg"))[:1]
        candidates += [(path, class_dir.name) for path in first]
    assert candidates, f"no photos under {dataset_dir / 'validation'}"
    chosen = None
    for path, true_class in candidates:
        data = path.read_bytes()
        answer = api_upload(gateway_url, path.name, data)
        chosen = chosen or Photo(path, data, true_class, answer)
        if answer["top"] == true_class:
            return Photo(path, data, true_class, answer)
    assert chosen is not None
    return chosen


# --- reading the page --------------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """What the page shows after a successful classification."""

    top: str
    scores: dict[str, float]
    order: list[str]
    highlighted: list[str]
    fill_ratios: dict[str, float]
    model_name: str
    model_version: str
    latency: str
    request_id: str
    status: str


def wait_for_outcome(page: Any) -> None:
    """Wait until the page shows a result or an error."""
    page.wait_for_function(
        "() => !document.getElementById('result').hidden"
        " || document.getElementById('error').childElementCount > 0"
    )


def read_result(page: Any) -> Shown:
    """Read the result section, failing with the page's error text if it shows one."""
    wait_for_outcome(page)
    error = page.inner_text("#error")
    assert error == "", f"the page shows an error: {error}"
    rows = page.eval_on_selector_all(
        "#bars li",
        """rows => rows.map(row => ({
            label: row.dataset.label,
            score: Number(row.dataset.score),
            top: row.classList.contains('top'),
            ratio: row.querySelector('.bar-fill').getBoundingClientRect().width /
                   row.querySelector('.bar-track').getBoundingClientRect().width,
        }))""",
    )
    return Shown(
        top=page.inner_text("#top-label"),
        scores={row["label"]: row["score"] for row in rows},
        order=[row["label"] for row in rows],
        highlighted=[row["label"] for row in rows if row["top"]],
        fill_ratios={row["label"]: row["ratio"] for row in rows},
        model_name=page.inner_text("#model-name"),
        model_version=page.inner_text("#model-version"),
        latency=page.inner_text("#latency"),
        request_id=page.inner_text("#request-id"),
        status=page.inner_text("#status"),
    )


def assert_shows_answer(shown: Shown, answer: dict[str, Any]) -> None:
    """The page shows exactly the API's answer: ten bars, highest first, the top one marked."""
    assert shown.top == answer["top"]
    assert shown.highlighted == [answer["top"]]
    assert shown.scores == pytest.approx(answer["scores"], abs=1e-6)
    assert shown.order == sorted(answer["scores"], key=lambda label: -answer["scores"][label])
    for label, score in answer["scores"].items():
        assert shown.fill_ratios[label] == pytest.approx(score, abs=0.02), label
    assert shown.model_name == answer["model"]["name"]
    model = answer["model"]
    labelled = model["route"] in ("stable", "canary")  # "3 (canary)" during a rollout
    assert shown.model_version == (
        f"{model['version']} ({model['route']})" if labelled else str(model["version"])
    )
    # the gateway's own time comes from its Server-Timing header and fits in the round trip
    latency = re.fullmatch(r"(\d+) ms round trip, (\d+) ms in the gateway", shown.latency)
    assert latency is not None, shown.latency
    assert int(latency[2]) <= int(latency[1]) + 1
    assert re.fullmatch(r"[A-Za-z0-9._:-]+", shown.request_id)
    assert answer["top"] in shown.status  # the live region announces the result


def image_loaded(page: Any) -> bool:
    """Whether the preview image is displayed with real pixels."""
    return bool(
        page.eval_on_selector(
            "#preview-image", "img => !img.hidden && img.complete && img.naturalWidth > 0"
        )
    )


def no_horizontal_scroll(page: Any) -> bool:
    return bool(
        page.evaluate(
            "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
    )


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under artifacts/web/ (gitignored) for people to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


# --- the tests ---------------------------------------------------------------------------------


def test_uploaded_photo_shows_the_apis_scores_with_the_top_class_marked(
    page: Any, photo: Photo
) -> None:
    page.get_by_label("Choose a photo").set_input_files(str(photo.path))
    shown = read_result(page)
    assert_shows_answer(shown, photo.answer)
    assert page.get_attribute("#preview-image", "src").startswith("blob:")
    assert image_loaded(page)
    assert page.inner_text("#bars").count("%") == len(photo.answer["scores"])
    assert screenshot(page, "desktop-upload.png").stat().st_size > 0


def test_dropped_photo_is_classified(page: Any, photo: Photo) -> None:
    transfer = page.evaluate_handle(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: 'image/jpeg'}));
            return transfer;
        }""",
        [base64.b64encode(photo.data).decode(), photo.path.name],
    )
    page.dispatch_event("#drop-zone", "dragenter", {"dataTransfer": transfer})
    page.dispatch_event("#drop-zone", "dragover", {"dataTransfer": transfer})
    assert "dragging" in page.get_attribute("#drop-zone", "class")
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    assert_shows_answer(read_result(page), photo.answer)
    assert "dragging" not in page.get_attribute("#drop-zone", "class")


def test_url_shows_the_same_answer_as_the_upload(
    page: Any, photo: Photo, image_host: ImageHost
) -> None:
    url = image_host.url("/photo.jpg")
    page.get_by_label("Image URL").fill(url)
    page.get_by_role("button", name="Classify URL").click()
    assert_shows_answer(read_result(page), photo.answer)
    assert page.get_attribute("#preview-image", "src") == url
    page.wait_for_function("() => document.getElementById('preview-image').complete")
    assert image_loaded(page)
    screenshot(page, "desktop-url.png")


def test_url_the_browser_cannot_load_still_shows_the_result(
    page: Any, photo: Photo, image_host: ImageHost
) -> None:
    page.get_by_label("Image URL").fill(image_host.url("/gateway-only.jpg"))
    page.get_by_label("Image URL").press("Enter")
    assert_shows_answer(read_result(page), photo.answer)
    page.wait_for_function("() => document.getElementById('preview-image').hidden")
    assert "could not load the image" in page.inner_text("#preview-caption")


@pytest.mark.parametrize(
    "path_or_url",
    ["/missing.jpg", "not a url at all"],
    ids=["host-404", "not-a-url"],
)
def test_bad_url_shows_the_apis_error_in_plain_words(
    page: Any, gateway_url: str, image_host: ImageHost, path_or_url: str
) -> None:
    url = image_host.url(path_or_url) if path_or_url.startswith("/") else path_or_url
    api = requests.post(gateway_url + "/predict", json={"url": url}, timeout=60)
    assert api.status_code >= 400
    error = api.json()["error"]

    page.get_by_label("Image URL").fill(url)
    page.get_by_label("Image URL").press("Enter")
    wait_for_outcome(page)
    assert page.is_hidden("#result")
    shown = page.inner_text("#error")
    assert "could not be classified" in shown
    assert error["message"].rstrip(".").lower() in shown.lower()
    assert f"HTTP {api.status_code}" in shown and error["code"] in shown
    assert page.get_attribute("#error", "role") == "alert"
    screenshot(page, f"desktop-error-{'host' if path_or_url.startswith('/') else 'text'}.png")


def test_empty_url_asks_for_one_without_calling_the_api(page: Any) -> None:
    page.get_by_role("button", name="Classify URL").click()
    assert "address of an image" in page.inner_text("#error")
    assert page.evaluate("() => document.activeElement.id") == "url-input"


def focus_ring(page: Any) -> dict[str, Any]:
    """The focused element's id and the outline drawn for it (on it or its drop zone)."""
    ring: dict[str, Any] = page.evaluate(
        """() => {
            const el = document.activeElement;
            const ringed = el.id === 'file-input' ? el.closest('#drop-zone') : el;
            const style = getComputedStyle(ringed);
            return {id: el.id, outline: style.outlineStyle, width: parseFloat(style.outlineWidth)};
        }"""
    )
    return ring


def test_keyboard_reaches_every_control_with_a_visible_focus_and_enter_submits(
    page: Any, photo: Photo, image_host: ImageHost
) -> None:
    # Playwright turns on file chooser interception without waiting for it; a listener added
    # before the key presses below makes sure it is on when Enter opens the chooser.
    page.on("filechooser", lambda chooser: None)
    rings = []
    for _ in range(3):
        page.keyboard.press("Tab")
        rings.append(focus_ring(page))
    assert [ring["id"] for ring in rings] == ["url-input", "url-submit", "file-input"]
    for ring in rings:
        assert ring["outline"] != "none" and ring["width"] >= 2, ring

    # the drop zone's file input opens the file chooser from the keyboard
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files(str(photo.path))
    assert_shows_answer(read_result(page), photo.answer)

    # back to the URL field; typing and Enter submit the form
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert focus_ring(page)["id"] == "url-input"
    page.keyboard.type(image_host.url("/photo.jpg"))
    page.keyboard.press("Enter")
    page.wait_for_function(
        "url => document.getElementById('preview-image').getAttribute('src') === url",
        arg=image_host.url("/photo.jpg"),
    )
    assert_shows_answer(read_result(page), photo.answer)


def test_phone_width_has_no_horizontal_scroll(browser: Any, gateway_url: str, photo: Photo) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    try:
        tab.goto(gateway_url + "/")
        assert no_horizontal_scroll(tab)
        tab.get_by_label("Choose a photo").set_input_files(str(photo.path))
        assert_shows_answer(read_result(tab), photo.answer)
        assert no_horizontal_scroll(tab)
        screenshot(tab, "phone-upload.png")
        # a long unbroken URL and the error it causes must wrap, not widen the page
        tab.get_by_label("Image URL").fill("http://127.0.0.1:1/" + "x" * 300 + ".jpg")
        tab.get_by_label("Image URL").press("Enter")
        wait_for_outcome(tab)
        assert tab.inner_text("#error") != ""
        assert no_horizontal_scroll(tab)
        screenshot(tab, "phone-error.png")
    finally:
        context.close()


CONTRAST_SCRIPT = """() => {
    const channel = c => {
        c /= 255;
        return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    };
    const parse = s => s.match(/[\\d.]+/g).map(Number);
    const luminance = ([r, g, b]) =>
        0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
    const background = el => {
        for (; el; el = el.parentElement) {
            const rgba = parse(getComputedStyle(el).backgroundColor);
            if (rgba.length < 4 || rgba[3] === 1) return rgba.slice(0, 3);
            if (rgba[3] !== 0) throw new Error('translucent background on ' + el.tagName);
        }
        return [255, 255, 255];
    };
    const out = [];
    for (const el of document.querySelectorAll('body *')) {
        const text = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
        const box = el.getBoundingClientRect();
        if (!text || box.width <= 1 || box.height <= 1 || el.closest('[hidden]')) continue;
        const fg = luminance(parse(getComputedStyle(el).color));
        const bg = luminance(background(el));
        const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
        out.push({text: el.textContent.trim().slice(0, 40), ratio});
    }
    return out;
}"""


def test_every_text_has_contrast_of_at_least_4_5(page: Any, photo: Photo) -> None:
    page.get_by_label("Choose a photo").set_input_files(str(photo.path))
    read_result(page)
    page.get_by_label("Image URL").hover()  # hover styles count too
    texts = page.evaluate(CONTRAST_SCRIPT)
    page.get_by_label("Image URL").fill("not a url at all")
    page.get_by_role("button", name="Classify URL").hover()
    page.get_by_role("button", name="Classify URL").click()
    wait_for_outcome(page)
    texts += page.evaluate(CONTRAST_SCRIPT)
    assert len(texts) > 20
    low = [t for t in texts if t["ratio"] < 4.5]
    assert low == [], low


# --- a gateway that needs an API key -----------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_answer(keyed_gateway: Running, photo: Photo) -> dict[str, Any]:
    """The keyed gateway API's own answer for the page's photo."""
    response = requests.post(
        f"{keyed_gateway.url}/predict", files={"file": (photo.path.name, photo.data)},
        headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def open_page(context: Any, url: str) -> Any:
    """A tab on the page, once it has asked the gateway for its configuration."""
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    with tab.expect_response(lambda r: r.url.endswith("/api/config")):
        tab.goto(url + "/")
    return tab


@pytest.fixture
def keyed_context(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP)
    script_errors: list[str] = []
    context.on("weberror", lambda error: script_errors.append(str(error.error)))
    yield context
    context.close()
    assert script_errors == []


def test_page_asks_for_a_key_and_sends_it_as_a_bearer_token(
    keyed_context: Any,
    keyed_gateway: Running,
    photo: Photo,
    keyed_answer: dict[str, Any],
) -> None:
    page = open_page(keyed_context, keyed_gateway.url)
    assert page.is_visible("#key-input")
    assert page.get_attribute("#key-input", "type") == "password"

    # no key: the API's 401 in plain words, and the key field gets the focus
    page.get_by_label("Choose a photo").set_input_files(str(photo.path))
    wait_for_outcome(page)
    error = page.inner_text("#error")
    assert "HTTP 401" in error and "api_key_required" in error
    assert page.evaluate("document.activeElement.id") == "key-input"

    # a wrong key: 403
    page.fill("#key-input", WRONG_KEY)
    with page.expect_request("**/predict") as sent:
        page.get_by_label("Choose a photo").set_input_files(str(photo.path))
    assert sent.value.headers["authorization"] == f"Bearer {WRONG_KEY}"
    page.wait_for_function("() => document.getElementById('error').innerText.includes('403')")
    assert "api_key_invalid" in page.inner_text("#error")

    # the right key: the API's answer
    page.fill("#key-input", KEY)
    page.get_by_label("Choose a photo").set_input_files(str(photo.path))
    assert_shows_answer(read_result(page), keyed_answer)

    # kept for this tab (a reload fills it in and classifies straight away), never on disk
    assert page.evaluate("sessionStorage.getItem('clothing-gateway-api-key')") == KEY
    assert page.evaluate("localStorage.length") == 0
    page.reload()
    page.wait_for_function("() => document.getElementById('key-input').value !== ''")
    page.get_by_label("Choose a photo").set_input_files(str(photo.path))
    assert_shows_answer(read_result(page), keyed_answer)

    # "Forget key" clears it; a new tab (another session) starts without one
    page.click("#key-forget")
    assert page.evaluate("sessionStorage.getItem('clothing-gateway-api-key')") is None
    other = keyed_context.browser.new_context(viewport=DESKTOP)
    try:
        fresh = open_page(other, keyed_gateway.url)
        assert fresh.is_visible("#key-input") and fresh.input_value("#key-input") == ""
    finally:
        other.close()


def test_page_without_keys_shows_no_key_field(keyed_context: Any, gateway_url: str) -> None:
    page = open_page(keyed_context, gateway_url)
    assert page.is_hidden("#key-form")


def test_the_page_is_served_with_a_strict_content_security_policy_and_works_under_it(
    browser: Any, gateway_url: str, photo: Photo
) -> None:
    context = browser.new_context(viewport=DESKTOP)
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    violations: list[str] = []
    tab.on("console", lambda message: csp_violation(message, violations))
    response = tab.goto(gateway_url + "/")
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    # the page works under it: styles applied, the script runs and shows an answer
    assert tab.evaluate("getComputedStyle(document.body).margin") == "0px"  # style.css, not 8px
    tab.get_by_label("Choose a photo").set_input_files(str(photo.path))
    assert_shows_answer(read_result(tab), photo.answer)
    assert violations == []
    # control: an inline script is refused (so the policy really is in force)
    tab.evaluate(
        """() => { const s = document.createElement('script');
                   s.textContent = 'window.injected = true'; document.head.append(s); }"""
    )
    assert tab.evaluate("window.injected === undefined")
    tab.wait_for_timeout(200)
    assert any("script-src" in v for v in violations)
    context.close()
