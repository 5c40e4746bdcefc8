"""Hostile request bodies through the real gateway under gunicorn: oversized, invalid JSON,
wrong types, wrong media types; each beside a good request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from clothing_tools.local_stack import Running
from tests.reliability.hostile import expect_refusal, good_jpeg
from tests.reliability.support import MAX_IMAGE_BYTES, SLACK

pytestmark = pytest.mark.slow
MAX_BODY_BYTES = MAX_IMAGE_BYTES + 512 * 1024
WITHIN = SLACK + 4
JSON = {"Content-Type": "application/json"}
GoodCall = Callable[[str], Callable[[], requests.Response]]
Send = Callable[[str], requests.Response]


def raw(data: bytes, path: str = "/predict", headers: dict[str, str] = JSON) -> Send:
    return lambda base: requests.post(f"{base}{path}", data=data, headers=headers, timeout=60)


def as_json(payload: Any, path: str = "/predict") -> Send:
    return lambda base: requests.post(f"{base}{path}", json=payload, timeout=60)


def upload(data: bytes, field: str = "file") -> Send:
    return lambda base: requests.post(f"{base}/predict", files={field: ("x.jpg", data)}, timeout=60)


def padded_chunks(total: int) -> Iterator[bytes]:
    """A valid JSON object followed by `total` bytes of whitespace, sent chunked."""
    yield b'{"url": "http://127.0.0.1:1/a.jpg"}'
    for _ in range(total // 65536 + 1):
        yield b" " * 65536


CASES: dict[str, tuple[Send, int, str, str]] = {
    "JSON body over the limit": (
        raw(b'{"url": "' + b"a" * MAX_BODY_BYTES + b'"}'), 413, "payload_too_large", "/predict"),
    "upload over the image limit": (
        upload(b"\xff\xd8\xff" + b"\0" * MAX_IMAGE_BYTES), 413, "image_too_large", "/predict"),
    "upload over the body limit": (
        upload(b"\0" * (MAX_BODY_BYTES + 1)), 413, "payload_too_large", "/predict"),
    "truncated JSON": (raw(b'{"url": "http://'), 400, "invalid_json", "/predict"),
    "not UTF-8": (raw(b'{"url": "\xff\xfe"}'), 400, "invalid_json", "/predict"),
    "empty body": (raw(b""), 400, "invalid_json", "/predict"),
    "JSON array": (as_json(["http://example.com/a.jpg"]), 400, "invalid_json", "/predict"),
    "JSON string": (as_json("http://example.com/a.jpg"), 400, "invalid_json", "/predict"),
    "JSON null": (raw(b"null"), 400, "invalid_json", "/predict"),
    "url missing": (as_json({"uri": "x"}), 400, "bad_request", "/predict"),
    "url null": (as_json({"url": None}), 400, "bad_request", "/predict"),
    "url a number": (as_json({"url": 42}), 400, "invalid_url", "/predict"),
    "url NaN": (raw(b'{"url": NaN}'), 400, "invalid_url", "/predict"),
    "url a list": (as_json({"url": ["http://a/"]}), 400, "invalid_url", "/predict"),
    "url an object": (as_json({"url": {"href": "x"}}), 400, "invalid_url", "/predict"),
    "url a boolean": (as_json({"url": True}), 400, "invalid_url", "/predict"),
    "url empty": (as_json({"url": ""}), 400, "invalid_url", "/predict"),
    "url too long": (
        as_json({"url": "http://a.example/" + "a" * 3000}), 400, "invalid_url", "/predict"),
    "url not ASCII": (as_json({"url": "http://exämple.com/a.jpg"}), 400, "invalid_url", "/predict"),
    "text/plain body": (
        raw(b'{"url": "x"}', headers={"Content-Type": "text/plain"}), 415,
        "unsupported_media_type", "/predict"),
    "form-urlencoded body": (
        raw(b"url=x", headers={"Content-Type": "application/x-www-form-urlencoded"}), 415,
        "unsupported_media_type", "/predict"),
    "multipart without file": (upload(good_jpeg(), field="image"), 400, "bad_request", "/predict"),
    "multipart text file": (upload(b"hello"), 415, "unsupported_image_format", "/predict"),
    "multipart empty file": (upload(b""), 422, "undecodable_image", "/predict"),
    "batch urls a string": (as_json({"urls": "x"}, "/predict/batch"), 400, "bad_request",
                            "/predict/batch"),
    "batch empty": (as_json({"urls": []}, "/predict/batch"), 400, "bad_request", "/predict/batch"),
    "batch with a number": (as_json({"urls": ["http://a/", 1]}, "/predict/batch"), 400,
                            "bad_request", "/predict/batch"),
    "batch over the limit": (as_json({"urls": ["http://a/"] * 33}, "/predict/batch"), 400,
                             "too_many_urls", "/predict/batch"),
    "batch invalid JSON": (raw(b"{", "/predict/batch"), 400, "invalid_json", "/predict/batch"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_bodies_get_their_error(
    case: str, strict_gateway: Running, good_upload: GoodCall
) -> None:
    send, status, code, path = CASES[case]
    expect_refusal(
        lambda: send(strict_gateway.url), good_upload(strict_gateway.url), status, code,
        path=path, within=WITHIN,
    )  # fmt: skip


def test_deeply_nested_json_is_invalid_json(strict_gateway: Running, good_upload: GoodCall) -> None:
    nested = b'{"url": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    expect_refusal(
        lambda: raw(nested)(strict_gateway.url), good_upload(strict_gateway.url), 400,
        "invalid_json", within=WITHIN,
    )  # fmt: skip


def test_an_overlong_integer_is_invalid_json(
    strict_gateway: Running, good_upload: GoodCall
) -> None:
    expect_refusal(
        lambda: raw(b'{"url": ' + b"7" * 5000 + b"}")(strict_gateway.url),
        good_upload(strict_gateway.url), 400, "invalid_json", within=WITHIN,
    )  # fmt: skip


def test_a_chunked_body_over_the_limit_is_refused(
    strict_gateway: Running, good_upload: GoodCall
) -> None:
    expect_refusal(
        lambda: requests.post(f"{strict_gateway.url}/predict", headers=JSON, timeout=60,
                              data=padded_chunks(MAX_BODY_BYTES)),
        good_upload(strict_gateway.url), 413, "payload_too_large", within=WITHIN,
    )  # fmt: skip


def test_unknown_methods_and_paths_are_json(strict_gateway: Running) -> None:
    wrong_method = requests.get(f"{strict_gateway.url}/predict", timeout=30)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in wrong_method.headers["Allow"]
    unknown = requests.post(f"{strict_gateway.url}/../../etc/passwd", timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("request_id", ["a" * 129, "x y", "<script>", "id\u00e9", ""])
def test_hostile_request_ids_are_replaced(strict_gateway: Running, request_id: str) -> None:
    response = requests.get(
        f"{strict_gateway.url}/healthz",
        headers={"X-Request-ID": request_id.encode("utf-8").decode("latin-1")}, timeout=30,
    )  # fmt: skip
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] != request_id
    assert len(response.headers["X-Request-ID"]) == 32
