"""Fixtures for the gateway's unit tests: settings, app, client, a real loopback server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from gateway.app import create_app
from gateway.errors import ModelError, ModelTimeout, ModelUnavailable
from gateway.metrics import Metrics
from gateway.settings import Settings

from tests.gateway.support import (
    COLOURS,
    MAX_IMAGE_BYTES,
    Canary,
    ImageHost,
    Route,
    ScriptedPredictor,
    image_bytes,
    serve_images,
    serve_metrics_url,
)
from tests.helpers import serve_wsgi


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Small limits and short deadlines; loopback image hosts allowed."""
    return Settings(
        allow_private_urls=True,
        download_timeout=1.5,
        read_timeout=1.0,
        connect_timeout=1.0,
        max_image_bytes=MAX_IMAGE_BYTES,
        max_body_bytes=MAX_IMAGE_BYTES + 50_000,
        max_image_pixels=1_000_000,
        batch_max_urls=4,
        retry_after=7,
    )


@pytest.fixture(scope="session")
def image_host() -> Iterator[ImageHost]:
    """A loopback image host with good, broken and hostile answers."""
    routes = {
        "/red.jpg": Route(image_bytes("JPEG", COLOURS["red"])),
        "/green.png": Route(image_bytes("PNG", COLOURS["green"]), content_type="image/png"),
        "/blue.webp": Route(image_bytes("WEBP", COLOURS["blue"]), content_type="image/webp"),
        "/error": Route(b"boom", 500, "text/plain"),
        "/slow.jpg": Route(image_bytes("JPEG"), delay=5.0),
        "/late.png": Route(image_bytes("PNG", COLOURS["red"]), content_type="image/png", delay=0.3),
        "/huge.jpg": Route(b"\xff" * (MAX_IMAGE_BYTES + 1)),
        "/page.html": Route(b"<html><body>not an image</body></html>", content_type="text/html"),
        "/truncated.jpg": Route(image_bytes("JPEG", size=(400, 300))[:600]),
        "/wide.png": Route(image_bytes("PNG", size=(2000, 600)), content_type="image/png"),
    }
    with serve_images(routes) as host:
        yield host


@pytest.fixture
def canary() -> Iterator[Canary]:
    """A loopback listener that must see no connection."""
    listener = Canary()
    yield listener
    listener.close()


FAILURES = {
    "fail-unavailable": ModelUnavailable("the model server is unavailable", retry_after=7),
    "fail-timeout": ModelTimeout("the model did not answer in time"),
    "fail-error": ModelError("the model server failed"),
}


@pytest.fixture(scope="session")
def predictor() -> ScriptedPredictor:
    """The colour predictor, failing on the request ids in FAILURES."""
    return ScriptedPredictor(FAILURES)


@pytest.fixture(scope="session")
def app_metrics() -> Metrics:
    """The metrics of `app` (a registry of their own)."""
    return Metrics()


@pytest.fixture(scope="session")
def app(settings: Settings, predictor: ScriptedPredictor, app_metrics: Metrics) -> Flask:
    """The gateway with the colour predictor and the real downloader."""
    return create_app(settings, predictor=predictor, metrics=app_metrics)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def server(app: Flask) -> Iterator[str]:
    """The app behind a real threaded HTTP server on loopback; yields its base URL."""
    yield from serve_wsgi(app)


@pytest.fixture(scope="session")
def strict_app_metrics() -> Metrics:
    return Metrics()


@pytest.fixture(scope="session")
def strict_app(
    predictor: ScriptedPredictor, settings: Settings, strict_app_metrics: Metrics
) -> Flask:
    """The gateway with the production URL policy (no private addresses)."""
    strict = replace(settings, allow_private_urls=False)
    return create_app(strict, predictor=predictor, metrics=strict_app_metrics)


@pytest.fixture(scope="session")
def strict_server(strict_app: Flask) -> Iterator[str]:
    """Like `server` but with the production URL policy (no private addresses)."""
    yield from serve_wsgi(strict_app)


@pytest.fixture(scope="session")
def metrics_url(app_metrics: Metrics) -> Iterator[str]:
    """The app's metrics on a listener of their own (as the gunicorn master serves them)."""
    yield from serve_metrics_url(app_metrics)


@pytest.fixture(scope="session")
def strict_metrics_url(strict_app_metrics: Metrics) -> Iterator[str]:
    """The strict app's metrics on a listener of their own."""
    yield from serve_metrics_url(strict_app_metrics)
