"""Slow, lying and hostile image hosts, and hostile or exotic images, through the real gateway
under gunicorn (private URLs allowed so the loopback image host can be reached)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import requests

from clothing_tools.local_stack import Running
from tests.gateway.support import assert_documented, concurrently
from tests.reliability.hostile import MODES, HostileHost, NeverAccepts, expect_refusal
from tests.reliability.support import DOWNLOAD_DEADLINE, SLACK

pytestmark = pytest.mark.slow
WITHIN = DOWNLOAD_DEADLINE + SLACK  # a download never outlives its deadline (plus scheduling)


def post_url(base: str, url: str) -> Callable[[], requests.Response]:
    return lambda: requests.post(f"{base}/predict", json={"url": url}, timeout=60)


# path on the hostile host -> (status, code)
FAILURES: dict[str, tuple[int, str]] = {
    "/drip-body": (504, "download_timeout"),  # one byte every 2 s
    "/drip-headers": (504, "download_timeout"),  # one header byte every 1.5 s
    "/hang": (504, "download_timeout"),  # reads the request, never answers
    "/declared-huge": (413, "image_too_large"),  # Content-Length: 10 GB
    "/endless-chunked": (413, "image_too_large"),  # chunked, never ends
    "/endless-close": (413, "image_too_large"),  # no length, never ends
    "/lying-long": (502, "image_host_error"),  # declares twice what it sends
    "/lying-short": (422, "undecodable_image"),  # declares less than it sends: cut there
    "/gzip.jpg": (502, "image_host_error"),  # Content-Encoding: gzip is never decoded
    "/png-bomb": (413, "image_too_many_pixels"),  # 60 KB PNG of 8000x8000
    "/gif-bomb": (413, "image_too_many_pixels"),  # 35-byte GIF of 65535x65535
    "/png-text-bomb": (422, "undecodable_image"),  # zTXt chunk inflating to 64 MB
    "/truncated.jpg": (422, "undecodable_image"),
    "/truncated.png": (422, "undecodable_image"),
    "/empty": (422, "undecodable_image"),
    "/html": (415, "unsupported_image_format"),  # every one served as image/jpeg
    "/svg": (415, "unsupported_image_format"),
    "/tiff": (415, "unsupported_image_format"),
    "/psd": (415, "unsupported_image_format"),
    "/eps": (415, "unsupported_image_format"),
    "/status-500": (502, "image_host_error"),
}

# images the gateway must classify: animations, every mode, every orientation, odd shapes
SUCCESSES = [
    "/chunked.jpg",
    "/anim.gif",  # 3000 frames
    "/anim.png",  # 2000 frames
    "/anim.webp",  # 1000 frames
    "/1x1.png",
    "/1x10000.png",
    "/10000x1.png",
    "/20000x3.jpg",
    *[f"/exif-{orientation}.jpg" for orientation in range(1, 9)],
    *[f"/mode-{mode}.{fmt.lower()}" for fmt, mode in MODES],
]


@pytest.mark.parametrize("path", list(FAILURES))
def test_hostile_hosts_and_images_fail_cleanly(
    path: str, open_gateway: Running, hostile_host: HostileHost
) -> None:
    status, code = FAILURES[path]
    expect_refusal(
        post_url(open_gateway.url, hostile_host.url(path)),
        post_url(open_gateway.url, hostile_host.url("/good.jpg")),
        status, code, within=WITHIN,
    )  # fmt: skip


def test_a_host_that_never_accepts_times_out(
    open_gateway: Running, hostile_host: HostileHost
) -> None:
    listener = NeverAccepts()
    try:
        expect_refusal(
            post_url(open_gateway.url, f"http://127.0.0.1:{listener.port}/a.jpg"),
            post_url(open_gateway.url, hostile_host.url("/good.jpg")),
            504, "download_timeout", within=WITHIN,
        )  # fmt: skip
    finally:
        listener.close()


@pytest.mark.parametrize("path", SUCCESSES)
def test_exotic_but_valid_images_are_classified(
    path: str, open_gateway: Running, hostile_host: HostileHost
) -> None:
    def timed() -> tuple[requests.Response, float]:
        started = time.monotonic()
        response = post_url(open_gateway.url, hostile_host.url(path))()
        return response, time.monotonic() - started

    (response, elapsed), good = concurrently(
        timed, post_url(open_gateway.url, hostile_host.url("/good.jpg"))
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert_documented("/predict", "POST", 200, response.headers["Content-Type"], body)
    assert sum(body["scores"].values()) == pytest.approx(1.0, abs=1e-4)
    assert elapsed < WITHIN
    assert good.status_code == 200


def test_slow_hosts_do_not_starve_good_requests(
    open_gateway: Running, hostile_host: HostileHost
) -> None:
    """Eight hung downloads at once (every gunicorn thread of one worker) and good requests
    still get through, and every hung one ends at the deadline."""
    hung = [post_url(open_gateway.url, hostile_host.url("/hang"))] * 8
    good = [post_url(open_gateway.url, hostile_host.url("/good.jpg"))] * 4
    started = time.monotonic()
    responses = concurrently(*hung, *good)
    assert time.monotonic() - started < 2 * DOWNLOAD_DEADLINE + SLACK
    assert [r.status_code for r in responses[:8]] == [504] * 8
    assert [r.status_code for r in responses[8:]] == [200] * 4


def test_a_batch_of_hostile_urls_answers_each_in_order(
    open_gateway: Running, hostile_host: HostileHost
) -> None:
    paths = ["/good.jpg", "/drip-body", "/png-bomb", "/html", "/loop-a", "/gzip.jpg", "/1x1.png"]
    urls = [hostile_host.url(p) for p in paths]
    started = time.monotonic()
    response = requests.post(f"{open_gateway.url}/predict/batch", json={"urls": urls}, timeout=60)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    body = response.json()
    assert_documented("/predict/batch", "POST", 200, response.headers["Content-Type"], body)
    results = body["results"]
    assert [r["url"] for r in results] == urls
    codes = [r["error"]["code"] if "error" in r else "ok" for r in results]
    assert codes == [
        "ok", "download_timeout", "image_too_many_pixels", "unsupported_image_format",
        "image_host_error", "image_host_error", "ok",
    ]  # fmt: skip
    assert elapsed < WITHIN  # downloads run concurrently: one deadline, not the sum
