"""The reliability suite's stacks: the e2e model server, two gunicorn gateways on loopback (the
production URL policy, and private URLs allowed for loopback image hosts), in-process gateways
with an injected resolver behind a connect guard, and the hostile image host.

Every test's outcome is written to build/reliability/cases.json for docs/reliability.md.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import requests

from clothing_tools.local_stack import Running
from tests.reliability import hostile
from tests.reliability.hostile import (
    EPS,
    HTML,
    MODES,
    PSD,
    SVG,
    TIFF,
    HostileHost,
    body,
    redirect,
)
from tests.reliability.support import FIGURES, gunicorn, record_figures


@pytest.fixture(scope="session")
def strict_gateway(model_server: Running, logs: Path) -> Iterator[Running]:
    """The production URL policy: loopback, private and every special range refused."""
    yield from gunicorn(model_server, logs, "strict-gateway", GATEWAY_ALLOW_PRIVATE_URLS="false")


@pytest.fixture(scope="session")
def open_gateway(model_server: Running, logs: Path) -> Iterator[Running]:
    """Private URLs allowed, so loopback image hosts can be reached (development setting)."""
    yield from gunicorn(model_server, logs, "open-gateway", GATEWAY_ALLOW_PRIVATE_URLS="true")


@pytest.fixture(scope="session")
def hostile_host() -> Iterator[HostileHost]:
    """The loopback image host with every bad answer the suite needs."""
    jpeg = hostile.good_jpeg()
    big_jpeg = hostile.encode(hostile.photo_like((400, 300)), "JPEG")
    png = hostile.encode(hostile.photo_like((400, 300)), "PNG")
    routes: dict[str, hostile.Route] = {
        "/good.jpg": body(jpeg),
        "/drip-body": hostile.drip_body,
        "/drip-headers": hostile.drip_headers,
        "/hang": hostile.hang,
        "/declared-huge": hostile.declared_huge,
        "/endless-chunked": hostile.endless(chunked=True),
        "/endless-close": hostile.endless(chunked=False),
        "/chunked.jpg": hostile.chunked(jpeg),
        "/lying-long": hostile.lying_length(len(jpeg) * 2, jpeg),
        "/lying-short": hostile.lying_length(len(big_jpeg) - 400, big_jpeg),
        "/gzip.jpg": hostile.gzipped(jpeg),
        "/png-bomb": body(hostile.png_pixel_bomb(), "image/png"),
        "/png-text-bomb": body(hostile.png_text_bomb(), "image/png"),
        "/gif-bomb": body(hostile.gif_pixel_bomb(), "image/gif"),
        "/truncated.jpg": body(big_jpeg[: len(big_jpeg) // 2]),
        "/truncated.png": body(png[: len(png) // 2], "image/png"),
        "/empty": body(b""),
        "/html": body(HTML),
        "/svg": body(SVG),
        "/tiff": body(TIFF),
        "/psd": body(PSD),
        "/eps": body(EPS),
        "/anim.gif": body(hostile.animated("GIF", 3000), "image/gif"),
        "/anim.png": body(hostile.animated("PNG", 2000), "image/png"),
        "/anim.webp": body(hostile.animated("WEBP", 1000), "image/webp"),
        "/1x1.png": body(hostile.encode(hostile.photo_like((1, 1)), "PNG")),
        "/1x10000.png": body(hostile.encode(hostile.photo_like((1, 10000)), "PNG")),
        "/10000x1.png": body(hostile.encode(hostile.photo_like((10000, 1)), "PNG")),
        "/20000x3.jpg": body(hostile.encode(hostile.photo_like((20000, 3)), "JPEG")),
        "/slow.jpg": lambda h, q: None if h.wait(1.2) else h.reply(200, jpeg),
        "/status-500": lambda h, q: h.reply(500, b"boom", "text/plain"),
        "/loop-a": redirect("/loop-b"),
        "/loop-b": redirect("/loop-a", 307),
        "/chain-0": redirect("/chain-1"),
        "/chain-1": redirect("/chain-2", 301),
        "/chain-2": redirect("/chain-3", 308),
        "/chain-3": redirect("/good.jpg", 303),
        "/redirect": lambda h, q: h.reply(302, Location=unquote(q)),
    }
    for orientation in range(1, 9):
        routes[f"/exif-{orientation}.jpg"] = body(hostile.exif_jpeg(orientation))
    for fmt, mode in MODES:
        routes[f"/mode-{mode}.{fmt.lower()}"] = body(hostile.mode_image(fmt, mode))
    with hostile.serve_hostile(routes) as host:
        yield host


@pytest.fixture(scope="session")
def good_upload() -> Callable[[str], Callable[[], requests.Response]]:
    """A good multipart upload to a gateway (works whatever its URL policy)."""
    data = hostile.good_jpeg()

    def make(base: str) -> Callable[[], requests.Response]:
        return lambda: requests.post(
            f"{base}/predict", files={"file": ("good.jpg", data)}, timeout=60
        )

    return make


# --- figures for docs/reliability.md -----------------------------------------------------

_outcomes: list[dict[str, Any]] = []
_lock = threading.Lock()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not report.nodeid.startswith("tests/reliability/"):
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        entry = {"test": report.nodeid, "outcome": report.outcome,
                 "seconds": round(report.duration, 2)}  # fmt: skip
        if hasattr(report, "wasxfail"):
            entry["outcome"] = "xfailed" if report.skipped else "xpassed"
            entry["reason"] = report.wasxfail
        with _lock:
            _outcomes.append(entry)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _outcomes:
        return
    # merge with earlier runs (make test, make fuzz, make soak each run a part of the suite)
    previous: dict[str, dict[str, Any]] = {}
    existing = FIGURES / "cases.json"
    if existing.is_file():
        previous = {c["test"]: c for c in json.loads(existing.read_text()).get("cases", [])}
    # a test file run now replaces all its earlier entries (renamed or removed cases go)
    files_run = {c["test"].split("::", 1)[0] for c in _outcomes}
    previous = {k: v for k, v in previous.items() if k.split("::", 1)[0] not in files_run}
    previous.update({c["test"]: c for c in _outcomes})
    record_figures("cases", {"cases": sorted(previous.values(), key=lambda c: c["test"])})
