"""The web page against a gateway that needs an API key, in headless Chromium (Playwright):
it asks for the key, keeps it in this tab only, and sends it as a Bearer token."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from local_stack import Running

from tests.e2e.conftest import KEY, WRONG_KEY
from tests.e2e.test_web_page import (
    DESKTOP,
    WAIT_MS,
    Photo,
    assert_shows_answer,
    browser,  # noqa: F401 - the shared Chromium fixture
    photo,  # noqa: F401 - the shared photo fixture
    read_result,
    wait_for_outcome,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def keyed_answer(keyed_gateway: Running, photo: Photo) -> dict[str, Any]:  # noqa: F811
    """The keyed gateway API's own answer for the page's photo."""
    response = requests.post(
        f"{keyed_gateway.url}/predict", files={"file": (photo.path.name, photo.data)},
        headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()


def open_page(context: Any, url: str) -> Any:
    """A tab on the page, once it has asked the gateway for its configuration."""
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    with tab.expect_response(lambda r: r.url.endswith("/api/config")):
        tab.goto(url + "/")
    return tab


@pytest.fixture
def keyed_context(browser: Any) -> Iterator[Any]:  # noqa: F811 - the imported fixture
    context = browser.new_context(viewport=DESKTOP)
    script_errors: list[str] = []
    context.on("weberror", lambda error: script_errors.append(str(error.error)))
    yield context
    context.close()
    assert script_errors == []


def test_page_asks_for_a_key_and_sends_it_as_a_bearer_token(
    keyed_context: Any,
    keyed_gateway: Running,
    photo: Photo,  # noqa: F811 - the imported fixture
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
