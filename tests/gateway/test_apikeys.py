"""Optional API keys: the keys file, and a keyed gateway over a real loopback server.

/predict and /predict/batch need a known key (401 without one, 403 with a wrong one); every
other path stays open; a key never shows up in a log line, an error or a metric.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from gateway.apikeys import ApiKeys, presented_key
from gateway.app import create_app
from gateway.errors import ApiKeyInvalid, ApiKeyRequired
from gateway.logs import JsonFormatter
from gateway.metrics import Metrics
from gateway.settings import Settings, SettingsError

from tests.gateway.support import (
    COLOURS,
    ImageHost,
    ScriptedPredictor,
    assert_documented,
    image_bytes,
    serve_metrics_url,
)
from tests.helpers import serve_wsgi

KEY = "k3y-for-the-web-team-0123456789"
OTHER_KEY = "second-key/for+batch.jobs=="
WRONG_KEY = "not-a-key-of-this-gateway-42"
KEYS_FILE = f"""# keys of the clothing gateway, one per line

{KEY}
   {OTHER_KEY}
"""


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys"
    path.write_text(KEYS_FILE)
    return path


@pytest.fixture(scope="module")
def keyed_app_metrics() -> Metrics:
    return Metrics()


@pytest.fixture(scope="module")
def keyed_app(
    settings: Settings, predictor: ScriptedPredictor, keys_file: Path, keyed_app_metrics: Metrics
) -> Flask:
    keyed_settings = replace(settings, api_keys_file=str(keys_file))
    return create_app(keyed_settings, predictor=predictor, metrics=keyed_app_metrics)


@pytest.fixture(scope="module")
def keyed(keyed_app: Flask) -> Iterator[str]:
    """The keyed gateway behind a real threaded HTTP server; yields its base URL."""
    yield from serve_wsgi(keyed_app)


@pytest.fixture(scope="module")
def keyed_metrics(keyed_app_metrics: Metrics) -> Iterator[str]:
    yield from serve_metrics_url(keyed_app_metrics)


def upload(base: str, **headers: str) -> requests.Response:
    data = image_bytes("PNG", COLOURS["green"])
    return requests.post(f"{base}/predict", files={"file": ("p.png", data)}, headers=headers,
                         timeout=30)  # fmt: skip


def documented(response: requests.Response, path: str = "/predict") -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert_documented(path, "POST", response.status_code, response.headers["Content-Type"], body)
    return body


# -- the keys file -----------------------------------------------------------------------------


def test_keys_file_skips_blank_lines_and_comments(keys_file: Path) -> None:
    keys = ApiKeys.from_file(str(keys_file))
    assert len(keys.digests) == 2
    keys.check({"Authorization": f"Bearer {KEY}"})
    keys.check({"Authorization": f"Bearer {OTHER_KEY}"})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "GATEWAY_API_KEYS_FILE={path}: cannot read the keys file: No such file"),
        ("", "GATEWAY_API_KEYS_FILE={path}: the file holds no key"),
        ("# only a comment\n\n   \n", "the file holds no key"),
        (f"{KEY}\nshort-key\n", "GATEWAY_API_KEYS_FILE={path}: line 2: a key is 16 to 4096"),
        (f"{KEY} and more words\n", "line 1: a key is 16 to 4096 visible ASCII"),
        (b"\xff\xfe not text", "not UTF-8 text"),
    ],
)
def test_unusable_keys_file_refuses_to_start_naming_the_variable(
    tmp_path: Path, settings: Settings, content: str | bytes | None, message: str
) -> None:
    path = tmp_path / "keys"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError) as raised:
        create_app(replace(settings, api_keys_file=str(path)), predictor=ScriptedPredictor({}))
    assert message.format(path=path) in str(raised.value)
    assert "short-key" not in str(raised.value) and KEY not in str(raised.value)


def test_keys_file_is_read_from_the_environment(keys_file: Path) -> None:
    assert Settings.from_env({"GATEWAY_API_KEYS_FILE": str(keys_file)}).api_keys_file == str(
        keys_file
    )
    assert Settings.from_env({}).api_keys_file == ""  # off by default


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"Authorization": f"Bearer {KEY}"}, KEY),
        ({"Authorization": f"bearer   {KEY} "}, KEY),
        ({"X-API-Key": KEY}, KEY),
        ({"Authorization": f"Bearer {KEY}", "X-API-Key": OTHER_KEY}, KEY),
        ({"Authorization": f"Basic {KEY}", "X-API-Key": OTHER_KEY}, OTHER_KEY),
        ({"Authorization": f"Basic {KEY}"}, None),
        ({"Authorization": "Bearer "}, None),
        ({"X-API-Key": "  "}, None),
        ({}, None),
    ],
)
def test_presented_key_is_the_bearer_token_else_x_api_key(
    headers: dict[str, str], key: str | None
) -> None:
    assert presented_key(headers) == key


def test_check_refuses_a_missing_key_and_an_unknown_or_partial_one(keys_file: Path) -> None:
    keys = ApiKeys.from_file(str(keys_file))
    with pytest.raises(ApiKeyRequired):
        keys.check({})
    for wrong in (WRONG_KEY, KEY[:-1], KEY + "x", KEY.upper(), f"{KEY},{OTHER_KEY}"):
        with pytest.raises(ApiKeyInvalid):
            keys.check({"X-API-Key": wrong})


# -- a keyed gateway over HTTP -----------------------------------------------------------------


def test_predict_without_a_key_is_401_with_a_bearer_challenge(keyed: str) -> None:
    response = upload(keyed)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="clothing-gateway"'
    error = documented(response)["error"]
    assert error["code"] == "api_key_required"
    assert "Authorization: Bearer <key>" in error["message"]


def test_predict_with_a_wrong_key_is_403(keyed: str) -> None:
    for headers in ({"Authorization": f"Bearer {WRONG_KEY}"}, {"X-API-Key": WRONG_KEY}):
        response = upload(keyed, **headers)
        assert response.status_code == 403
        assert documented(response)["error"]["code"] == "api_key_invalid"
        assert "WWW-Authenticate" not in response.headers


def test_predict_with_any_known_key_classifies(keyed: str) -> None:
    for headers in (
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": f"Bearer {OTHER_KEY}"},
        {"X-API-Key": OTHER_KEY},
    ):
        response = upload(keyed, **headers)
        assert response.status_code == 200, response.text
        assert documented(response)["top"] == "green"


def test_batch_needs_a_key_too(keyed: str, image_host: ImageHost) -> None:
    body = {"urls": [image_host.url("/red.jpg")]}
    url = f"{keyed}/predict/batch"
    missing = requests.post(url, json=body, timeout=30)
    wrong = requests.post(url, json=body, headers={"X-API-Key": WRONG_KEY}, timeout=30)
    good = requests.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert documented(missing, "/predict/batch")["error"]["code"] == "api_key_required"
    assert documented(wrong, "/predict/batch")["error"]["code"] == "api_key_invalid"
    assert documented(good, "/predict/batch")["results"][0]["top"] == "red"


def test_key_is_checked_before_the_body_is_looked_at(keyed: str, image_host: ImageHost) -> None:
    # no key: refused as such even with a broken body or a URL the gateway would download
    broken = requests.post(f"{keyed}/predict", data=b"{", timeout=30,
                           headers={"Content-Type": "application/json"})  # fmt: skip
    assert broken.status_code == 401
    hits = image_host.hits.get("/blue.webp", 0)
    refused = requests.post(f"{keyed}/predict", json={"url": image_host.url("/blue.webp")},
                            headers={"X-API-Key": WRONG_KEY}, timeout=30)  # fmt: skip
    assert refused.status_code == 403
    assert image_host.hits.get("/blue.webp", 0) == hits


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/api/config", "/openapi.json", "/", "/static/app.js"]
)
def test_health_page_and_documents_stay_open(keyed: str, path: str) -> None:
    response = requests.get(f"{keyed}{path}", timeout=10)
    assert response.status_code == 200


def test_keys_never_reach_logs_errors_or_metrics(keyed_app: Flask, keyed_metrics: str) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gateway")  # gateway.access and the others propagate to it
    logger.addHandler(handler)
    try:
        client = keyed_app.test_client()
        answers = [
            client.post("/predict", headers={"Authorization": f"Bearer {WRONG_KEY}"}),
            client.post("/predict", headers={"X-API-Key": WRONG_KEY}, json={"url": 1}),
            client.post("/predict", headers={"Authorization": f"Bearer {KEY}"}, json={}),
            client.post("/predict/batch", headers={"X-API-Key": OTHER_KEY}, json={"urls": 3}),
        ]
    finally:
        logger.removeHandler(handler)
    assert [a.status_code for a in answers] == [403, 403, 400, 400]
    logged = stream.getvalue()
    assert logged.count('"error_code": "api_key_invalid"') == 2
    metrics = requests.get(keyed_metrics, timeout=10).text
    assert 'gateway_rejections_total{code="api_key_invalid",reason="api_key_invalid"}' in metrics
    for text in (logged, metrics, *(a.get_data(as_text=True) for a in answers)):
        for key in (KEY, OTHER_KEY, WRONG_KEY):
            assert key not in text


def test_api_config_tells_the_page_whether_a_key_is_needed(keyed: str, server: str) -> None:
    for base, required in ((keyed, True), (server, False)):
        response = requests.get(f"{base}/api/config", timeout=10)
        assert response.status_code == 200
        body = response.json()
        assert_documented("/api/config", "GET", 200, response.headers["Content-Type"], body)
        assert body == {"api_key_required": required}
