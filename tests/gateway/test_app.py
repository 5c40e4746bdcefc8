"""The HTTP API over a real loopback server: answers, every error case, metrics, logs, OpenAPI.

The model is not the point here: a small colour-reading predictor stands behind the
`Predictor` seam; downloads use the real downloader against a loopback image host.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from gateway import errors
from gateway.app import STATIC_DIR, create_app
from gateway.fetch import FetchedImage
from gateway.logs import JsonFormatter
from gateway.settings import Settings
from hypothesis import given
from hypothesis import settings as settings_profile
from hypothesis import strategies as st

from tests.gateway.support import (
    COLOURS,
    MAX_IMAGE_BYTES,
    OPENAPI,
    Canary,
    ImageHost,
    ScriptedPredictor,
    assert_documented,
    concurrently,
    image_bytes,
)

Call = Callable[[str], requests.Response]


def check(response: requests.Response, path: str, method: str = "POST") -> Any:
    """Assert the response matches the OpenAPI document and return its JSON body."""
    body = (
        response.json() if response.headers["Content-Type"].startswith("application/json") else None
    )
    assert_documented(path, method, response.status_code, response.headers["Content-Type"], body)
    return body


def good_request(server: str, image_host: ImageHost) -> Callable[[], requests.Response]:
    return lambda: requests.post(
        f"{server}/predict", json={"url": image_host.url("/red.jpg")}, timeout=30
    )


def upload(server: str, data: bytes, name: str = "photo", **kwargs: Any) -> requests.Response:
    return requests.post(f"{server}/predict", files={"file": (name, data)}, timeout=30, **kwargs)


# -- answers --------------------------------------------------------------------------------


def test_predict_by_url_answers_every_label(server: str, image_host: ImageHost) -> None:
    response = requests.post(
        f"{server}/predict", json={"url": image_host.url("/green.png")}, timeout=30
    )
    assert response.status_code == 200
    body = check(response, "/predict")
    assert body["model"] == {"name": "colour-model", "version": 3, "route": "latest"}
    assert body["top"] == "green"
    assert set(body["scores"]) == {"red", "green", "blue"}
    assert sum(body["scores"].values()) == pytest.approx(1.0)


def test_seed_client_works_unchanged(server: str, image_host: ImageHost) -> None:
    # the seed's client: requests.post(url, json={"url": ...}).json()
    result = requests.post(
        f"{server}/predict", json={"url": image_host.url("/blue.webp")}, timeout=30
    ).json()
    assert result["top"] == "blue"


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("WEBP", "RGB"), ("GIF", "P"), ("BMP", "RGB")],
)
@pytest.mark.parametrize("colour", ["red", "green", "blue"])
def test_upload_of_every_allowed_format(server: str, fmt: str, mode: str, colour: str) -> None:
    response = upload(server, image_bytes(fmt, COLOURS[colour], mode=mode))
    assert response.status_code == 200
    assert check(response, "/predict")["top"] == colour


def test_batch_keeps_order_and_reports_bad_items(
    server: str, image_host: ImageHost, predictor: ScriptedPredictor
) -> None:
    urls = [
        image_host.url("/blue.webp"),
        image_host.url("/missing.jpg"),
        image_host.url("/red.jpg"),
        image_host.url("/page.html"),
    ]
    before = len(predictor.batches)
    response = requests.post(f"{server}/predict/batch", json={"urls": urls}, timeout=30)
    assert response.status_code == 200
    body = check(response, "/predict/batch")
    results = body["results"]
    assert [r["url"] for r in results] == urls
    assert results[0]["top"] == "blue" and results[2]["top"] == "red"
    assert results[1]["error"]["code"] == "image_host_error"
    assert results[3]["error"]["code"] == "unsupported_image_format"
    # the two good images went to the model together, in one call
    assert predictor.batches[before:] == [2]


def test_batch_of_only_bad_items_answers_200(server: str, image_host: ImageHost) -> None:
    response = requests.post(
        f"{server}/predict/batch", json={"urls": [image_host.url("/error")]}, timeout=30
    )
    assert response.status_code == 200
    assert check(response, "/predict/batch")["results"][0]["error"]["code"] == "image_host_error"


def server_timing(response: requests.Response) -> dict[str, float]:
    """The Server-Timing header as {metric: milliseconds}, in the order sent."""
    metrics = {}
    for part in response.headers["Server-Timing"].split(","):
        name, _, duration = part.strip().partition(";dur=")
        metrics[name] = float(duration)
    return metrics


def test_server_timing_names_each_stage_of_a_url_request(
    server: str, image_host: ImageHost
) -> None:
    # the image host waits 0.3 s before answering: that time belongs to the download
    response = requests.post(
        f"{server}/predict", json={"url": image_host.url("/late.png")}, timeout=30
    )
    assert response.status_code == 200
    timing = server_timing(response)
    assert list(timing) == ["download", "preprocess", "model", "total"]
    assert timing["download"] >= 300
    assert timing["download"] > timing["preprocess"] + timing["model"]
    assert timing["total"] >= timing["download"] + timing["preprocess"] + timing["model"]


def test_server_timing_of_uploads_batches_and_errors(server: str, image_host: ImageHost) -> None:
    uploaded = server_timing(upload(server, image_bytes("PNG", COLOURS["red"])))
    assert list(uploaded) == ["preprocess", "model", "total"]
    batch = requests.post(
        f"{server}/predict/batch",
        json={"urls": [image_host.url("/late.png"), image_host.url("/red.jpg")]},
        timeout=30,
    )
    timing = server_timing(batch)
    assert list(timing) == ["images", "model", "total"]
    assert timing["images"] >= 300  # every download and preprocess, as one wall time
    refused = requests.post(f"{server}/predict", data=b"{", timeout=10)
    assert refused.status_code == 400
    assert list(server_timing(refused)) == ["total"]


def test_request_id_is_echoed_or_generated(server: str) -> None:
    given = requests.get(f"{server}/healthz", headers={"X-Request-ID": "abc-123"}, timeout=10)
    assert given.headers["X-Request-ID"] == "abc-123"
    generated = requests.get(f"{server}/healthz", timeout=10).headers["X-Request-ID"]
    hostile = requests.get(
        f"{server}/healthz", headers={"X-Request-ID": "x" * 500}, timeout=10
    ).headers["X-Request-ID"]
    assert len(generated) == 32 and len(hostile) == 32 and generated != hostile


# -- errors: each with a good request running at the same time --------------------------------


def post_json(body: Any, path: str = "/predict") -> Call:
    return lambda server: requests.post(f"{server}{path}", json=body, timeout=30)


def post_raw(data: bytes, content_type: str, path: str = "/predict") -> Call:
    return lambda server: requests.post(
        f"{server}{path}", data=data, headers={"Content-Type": content_type}, timeout=30
    )


def url_of(path: str) -> Callable[[ImageHost], Any]:
    return lambda host: {"url": host.url(path)}


def with_request_id(request_id: str) -> Call:
    return lambda server: upload(server, image_bytes(), headers={"X-Request-ID": request_id})


ERROR_CASES: dict[str, tuple[Callable[[str, ImageHost], requests.Response], int, str]] = {
    "malformed json": (
        lambda s, h: post_raw(b'{"url": ', "application/json")(s),
        400,
        "invalid_json",
    ),
    "json not an object": (lambda s, h: post_json(["x"])(s), 400, "invalid_json"),
    "missing url": (lambda s, h: post_json({"link": "x"})(s), 400, "bad_request"),
    "url not a string": (lambda s, h: post_json({"url": 5})(s), 400, "invalid_url"),
    "malformed url": (
        lambda s, h: post_json({"url": "http://exa mple.com/a.jpg"})(s),
        400,
        "invalid_url",
    ),
    "not http": (lambda s, h: post_json({"url": "file:///etc/passwd"})(s), 400, "forbidden_url"),
    "multipart without file": (
        lambda s, h: requests.post(f"{s}/predict", files={"photo": ("a", b"x")}, timeout=30),
        400,
        "bad_request",
    ),
    "form body": (
        lambda s, h: post_raw(b"url=x", "application/x-www-form-urlencoded")(s),
        415,
        "unsupported_media_type",
    ),
    "body over the limit": (
        lambda s, h: upload(s, b"\0" * (MAX_IMAGE_BYTES + 60_000)),
        413,
        "payload_too_large",
    ),
    "upload over the image limit": (
        lambda s, h: upload(s, b"\0" * (MAX_IMAGE_BYTES + 1)),
        413,
        "image_too_large",
    ),
    "download over the image limit": (
        lambda s, h: post_json(url_of("/huge.jpg")(h))(s),
        413,
        "image_too_large",
    ),
    "too many pixels": (
        lambda s, h: post_json(url_of("/wide.png")(h))(s),
        413,
        "image_too_many_pixels",
    ),
    "not an image": (
        lambda s, h: post_json(url_of("/page.html")(h))(s),
        415,
        "unsupported_image_format",
    ),
    "tiff upload": (lambda s, h: upload(s, image_bytes("TIFF")), 415, "unsupported_image_format"),
    "undecodable": (
        lambda s, h: post_json(url_of("/truncated.jpg")(h))(s),
        422,
        "undecodable_image",
    ),
    "host error": (lambda s, h: post_json(url_of("/error")(h))(s), 502, "image_host_error"),
    "host 404": (
        lambda s, h: post_json(url_of("/nothing-here.jpg")(h))(s),
        502,
        "image_host_error",
    ),
    "download deadline": (
        lambda s, h: post_json(url_of("/slow.jpg")(h))(s),
        504,
        "download_timeout",
    ),
    "model unavailable": (
        lambda s, h: with_request_id("fail-unavailable")(s),
        503,
        "model_unavailable",
    ),
    "model deadline": (lambda s, h: with_request_id("fail-timeout")(s), 504, "model_timeout"),
    "model error": (lambda s, h: with_request_id("fail-error")(s), 502, "model_error"),
    "batch not a list": (
        lambda s, h: post_json({"urls": "x"}, "/predict/batch")(s),
        400,
        "bad_request",
    ),
    "batch empty": (lambda s, h: post_json({"urls": []}, "/predict/batch")(s), 400, "bad_request"),
    "batch too many": (
        lambda s, h: post_json({"urls": ["x"] * 5}, "/predict/batch")(s),
        400,
        "too_many_urls",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_error_answers_and_a_concurrent_good_request_succeeds(
    case: str, server: str, image_host: ImageHost
) -> None:
    call, status, code = ERROR_CASES[case]
    bad, good = concurrently(lambda: call(server, image_host), good_request(server, image_host))
    assert bad.status_code == status, bad.text
    path = "/predict/batch" if "batch" in case else "/predict"
    body = check(bad, path)
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    if status == 503:
        assert bad.headers["Retry-After"] == "7"
    assert good.status_code == 200 and good.json()["top"] == "red"


def test_forbidden_url_never_connects(
    strict_server: str, strict_metrics_url: str, canary: Canary
) -> None:
    url = f"http://127.0.0.1:{canary.port}/photo.jpg"
    bad, good = concurrently(
        lambda: requests.post(f"{strict_server}/predict", json={"url": url}, timeout=30),
        lambda: upload(strict_server, image_bytes("PNG", COLOURS["green"])),
    )
    assert bad.status_code == 400
    assert check(bad, "/predict")["error"]["code"] == "forbidden_url"
    assert good.status_code == 200 and good.json()["top"] == "green"
    batch = requests.post(
        f"{strict_server}/predict/batch",
        json={"urls": [url, f"http://[::1]:{canary.port}/"]},
        timeout=30,
    )
    assert [r["error"]["code"] for r in batch.json()["results"]] == ["forbidden_url"] * 2
    assert canary.connections == 0
    metrics = requests.get(strict_metrics_url, timeout=10).text
    assert 'gateway_rejections_total{code="forbidden_url",reason="loopback"}' in metrics


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nowhere", 404, "not_found"),
        ("GET", "/predict", 405, "method_not_allowed"),
        ("DELETE", "/healthz", 405, "method_not_allowed"),
    ],
)
def test_unknown_routes_and_methods_are_json(
    client: FlaskClient, method: str, path: str, status: int, code: str
) -> None:
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    if status == 405:
        assert "Allow" in response.headers


# -- operations -----------------------------------------------------------------------------


def test_health_and_readiness(server: str) -> None:
    health = requests.get(f"{server}/healthz", timeout=10)
    assert health.status_code == 200 and check(health, "/healthz", "GET") == {"status": "ok"}
    ready = requests.get(f"{server}/readyz", timeout=10)
    assert ready.status_code == 200
    assert check(ready, "/readyz", "GET")["model"] == {
        "name": "colour-model",
        "version": 3,
        "route": "latest",
    }


def test_metrics_count_requests_downloads_and_model_calls(
    server: str, metrics_url: str, image_host: ImageHost
) -> None:
    def value(text: str, sample: str) -> float:
        for line in text.splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
        return 0.0

    sample = 'gateway_requests_total{method="POST",route="/predict",status="200"}'
    before = requests.get(metrics_url, timeout=10).text
    for _ in range(3):
        assert good_request(server, image_host)().status_code == 200
    response = requests.get(metrics_url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    after = response.text
    assert value(after, sample) - value(before, sample) == 3
    for name in (
        "gateway_download_duration_seconds_count",
        "gateway_download_bytes_count",
        'gateway_model_duration_seconds_count{outcome="ok"}',
    ):
        assert value(after, name) - value(before, name) >= 3, name
    assert "gateway_request_duration_seconds_bucket" in after


def test_public_port_does_not_serve_metrics(server: str, metrics_url: str) -> None:
    response = requests.get(f"{server}/metrics", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "gateway_requests_total" not in response.text
    assert "/metrics" not in OPENAPI["paths"]
    assert "gateway_requests_total" in requests.get(metrics_url, timeout=10).text


def test_openapi_document_is_served_and_lists_every_error_code(server: str) -> None:
    response = requests.get(f"{server}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.json() == OPENAPI
    documented = set(OPENAPI["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"])
    codes = {
        kind.code
        for kind in vars(errors).values()
        if isinstance(kind, type) and issubclass(kind, errors.GatewayError)
    }
    assert codes == documented


def test_index_page_is_served_when_installed(client: FlaskClient) -> None:
    with client.get("/") as response:
        if (STATIC_DIR / "index.html").is_file():
            assert response.status_code == 200 and response.mimetype == "text/html"
            assert b"<html" in response.get_data().lower()
        else:
            assert response.status_code == 404
            assert response.get_json()["error"]["code"] == "not_found"


def test_one_json_log_line_per_request(app: Flask, image_host: ImageHost) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gateway.access")
    logger.addHandler(handler)
    try:
        client = app.test_client()
        client.post(
            "/predict",
            json={"url": image_host.url("/red.jpg")},
            headers={"X-Request-ID": "log-test-1"},
        )
        client.post(
            "/predict",
            json={"url": image_host.url("/error")},
            headers={"X-Request-ID": "log-test-2"},
        )
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == ["log-test-1", "log-test-2"]
    assert [line["status"] for line in lines] == [200, 502]
    assert lines[1]["error_code"] == "image_host_error"
    assert all(line["route"] == "/predict" and line["duration_ms"] >= 0 for line in lines)


# -- no input gives a 500 -------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
BODIES = st.one_of(
    st.binary(max_size=300),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"url": JSON_VALUES}).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"urls": JSON_VALUES}).map(lambda v: json.dumps(v).encode()),
)


@pytest.fixture(scope="module")
def offline_client(settings: Settings, predictor: ScriptedPredictor) -> FlaskClient:
    """The app with a fetcher that never touches the network (every URL gives one image)."""
    data = image_bytes("PNG", COLOURS["blue"])
    fetched = FetchedImage(data=data, final_url="x", elapsed=0.0)
    return create_app(
        settings, predictor=predictor, fetcher=lambda url, hold: fetched
    ).test_client()


@settings_profile(max_examples=300, deadline=None)
@given(
    body=BODIES,
    path=st.sampled_from(["/predict", "/predict/batch"]),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "", "multipart/form-data; boundary=x"]
    ),
)
def test_no_body_of_any_shape_causes_a_server_error(
    offline_client: FlaskClient, body: bytes, path: str, content_type: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = offline_client.post(path, data=body, headers=headers)
    assert response.status_code < 500, response.get_data(as_text=True)
    assert_documented(path, "POST", response.status_code, response.content_type, response.json)
