"""Schemathesis against the gateway's own OpenAPI document (`GET /openapi.json`): no 5xx and
no response that breaks the document, for schema-following and schema-breaking requests.

The app is the real gateway in this process (WSGI) with the real TF Serving client talking to
the loopback model server. Generated image URLs can name any host, so downloads go through the
production policy (private URLs refused) with an injected resolver that refuses every name,
behind a connect guard: a generated public IP literal passes the policy and its connection is
refused by the guard before a packet is sent; the test asserts the policy never let a
non-public address through. `make fuzz` runs many more examples (RELIABILITY_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from gateway.app import create_app
from gateway.fetch import FetchPolicy, fetch_image
from gateway.settings import Settings
from gateway.tfserving import TFServingPredictor
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from clothing_tools.local_stack import Running
from tests.reliability.hostile import ConnectGuard, TableResolver
from tests.reliability.support import MAX_IMAGE_BYTES, record_figures

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "25"))
# derandomized (reproducible) in `make test`; `make fuzz` explores
DERANDOMIZE = "RELIABILITY_FUZZ_EXAMPLES" not in os.environ
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
# (method, path, mode): schema-breaking requests only exist where there is input to break
RUNS = [
    ("POST", "/predict", POSITIVE),
    ("POST", "/predict", NEGATIVE),
    ("POST", "/predict/batch", POSITIVE),
    ("POST", "/predict/batch", NEGATIVE),
    ("GET", "/healthz", POSITIVE),
    ("GET", "/readyz", POSITIVE),
    ("GET", "/api/config", POSITIVE),
    ("GET", "/openapi.json", POSITIVE),
    # schemathesis' WSGI transport reads a streamed response without closing it, so the
    # page's file handle is left to the garbage collector (the harness's leak, not the app's)
    pytest.param(
        "GET", "/", POSITIVE,
        marks=[
            pytest.mark.filterwarnings("ignore::ResourceWarning"),
            pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
        ],
    ),
]  # fmt: skip
KEYED = [("POST", "/predict"), ("POST", "/predict/batch")]
_tally: dict[str, Any] = {"calls": 0, "statuses": {}, "seconds": 0.0}


@dataclass
class FuzzTarget:
    app: Flask
    guard: ConnectGuard
    schema: Any
    api_key: str = ""  # the one key of a keyed gateway


def fuzz_target(model_server: Running, api_keys_file: Path | None = None) -> Iterator[FuzzTarget]:
    """The in-process gateway (with the API key in `api_keys_file`, if given) and its schema."""
    gateway_settings = Settings(
        tf_serving_host=model_server.grpc_target, download_timeout=3.0, read_timeout=2.0,
        connect_timeout=1.0, max_image_bytes=MAX_IMAGE_BYTES,
        max_body_bytes=MAX_IMAGE_BYTES + 512 * 1024, log_level="ERROR",
        api_keys_file=str(api_keys_file or ""),
    )  # fmt: skip
    assert not gateway_settings.allow_private_urls
    policy = FetchPolicy(
        max_bytes=gateway_settings.max_image_bytes, connect_timeout=1.0, read_timeout=2.0,
        total_timeout=3.0, allow_private=False,
    )  # fmt: skip
    refuse_every_name = TableResolver({})
    predictor = TFServingPredictor(gateway_settings)
    app = create_app(
        gateway_settings,
        predictor,
        fetcher=lambda url, hold: fetch_image(url, policy, refuse_every_name, hold),
    )
    with ConnectGuard() as guard:
        schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
        api_key = api_keys_file.read_text().strip() if api_keys_file else ""
        yield FuzzTarget(app, guard, schema, api_key)
    predictor.close()
    # every address the policy let through was public (and the guard refused it anyway)
    assert all(ipaddress.ip_address(a.split("%")[0]).is_global for a in guard.outside)


@pytest.fixture(scope="module")
def target(model_server: Running) -> Iterator[FuzzTarget]:
    guarded = 0
    for fuzz_app in fuzz_target(model_server):
        yield fuzz_app
        guarded = len(fuzz_app.guard.outside)
    record_figures(
        "fuzz-short" if DERANDOMIZE else "fuzz-long",
        {**_tally, "examples_per_operation_and_mode": EXAMPLES, "guarded": guarded},
    )


@pytest.fixture(scope="module")
def keyed_target(
    model_server: Running, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzTarget]:
    """The gateway with one API key."""
    keys = tmp_path_factory.mktemp("fuzz-keys") / "keys"
    keys.write_text(f"{secrets.token_urlsafe(32)}\n")
    yield from fuzz_target(model_server, keys)


@pytest.mark.parametrize(("method", "path", "mode"), RUNS)
def test_no_server_error_and_every_response_documented(
    target: FuzzTarget, method: str, path: str, mode: GenerationMode
) -> None:
    fuzz(target, method, path, mode)


# the operations behind an API key, with and without schema-following requests
KEYED_RUNS = [(method, path, mode) for method, path in KEYED for mode in (POSITIVE, NEGATIVE)]


@pytest.mark.parametrize(("method", "path", "mode"), KEYED_RUNS)
def test_keyed_gateway_answers_as_documented_with_without_and_with_a_wrong_key(
    keyed_target: FuzzTarget, method: str, path: str, mode: GenerationMode
) -> None:
    key = keyed_target.api_key
    assert set(fuzz(keyed_target, method, path, mode)) == {401}
    assert set(fuzz(keyed_target, method, path, mode, {"X-API-Key": key[::-1]})) == {403}
    with_key = fuzz(keyed_target, method, path, mode, {"Authorization": f"Bearer {key}"})
    assert not {401, 403} & set(with_key), with_key


def fuzz(
    target: FuzzTarget, method: str, path: str, mode: GenerationMode,
    headers: dict[str, str] | None = None,
) -> list[int]:  # fmt: skip
    """Run the operation's generated cases (with `headers` added) through the checks; the
    statuses seen."""
    operation = target.schema[path][method]
    seen: list[int] = []

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, derandomize=DERANDOMIZE,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case: Any) -> None:
        started = time.monotonic()
        response = case.call(headers=headers)
        _tally["seconds"] += time.monotonic() - started
        _tally["calls"] += 1
        seen.append(response.status_code)
        status = str(response.status_code)
        _tally["statuses"][status] = _tally["statuses"].get(status, 0) + 1
        case.validate_response(response, checks=CHECKS)

    exercise()
    return seen
