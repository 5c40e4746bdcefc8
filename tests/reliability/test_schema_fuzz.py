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
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
_tally: dict[str, Any] = {"calls": 0, "statuses": {}, "seconds": 0.0}


@dataclass
class FuzzTarget:
    app: Flask
    guard: ConnectGuard
    schema: Any


@pytest.fixture(scope="module")
def target(model_server: Running) -> Iterator[FuzzTarget]:
    gateway_settings = Settings(
        tf_serving_host=model_server.grpc_target, download_timeout=3.0, read_timeout=2.0,
        connect_timeout=1.0, max_image_bytes=MAX_IMAGE_BYTES,
        max_body_bytes=MAX_IMAGE_BYTES + 512 * 1024, log_level="ERROR",
    )  # fmt: skip
    assert not gateway_settings.allow_private_urls
    policy = FetchPolicy(
        max_bytes=gateway_settings.max_image_bytes, connect_timeout=1.0, read_timeout=2.0,
        total_timeout=3.0, allow_private=False,
    )  # fmt: skip
    refuse_every_name = TableResolver({})
    predictor = TFServingPredictor(gateway_settings)
    app = create_app(
        gateway_settings, predictor, fetcher=lambda url: fetch_image(url, policy, refuse_every_name)
    )
    with ConnectGuard() as guard:
        schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
        yield FuzzTarget(app, guard, schema)
    predictor.close()
    # every address the policy let through was public (and the guard refused it anyway)
    assert all(ipaddress.ip_address(a.split("%")[0]).is_global for a in guard.outside)
    record_figures(
        "fuzz-short" if DERANDOMIZE else "fuzz-long",
        {**_tally, "examples_per_operation_and_mode": EXAMPLES, "guarded": len(guard.outside)},
    )


@pytest.mark.parametrize(("method", "path", "mode"), RUNS)
def test_no_server_error_and_every_response_documented(
    target: FuzzTarget, method: str, path: str, mode: GenerationMode
) -> None:
    operation = target.schema[path][method]

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, derandomize=DERANDOMIZE,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case: Any) -> None:
        started = time.monotonic()
        response = case.call()
        _tally["seconds"] += time.monotonic() - started
        _tally["calls"] += 1
        status = str(response.status_code)
        _tally["statuses"][status] = _tally["statuses"].get(status, 0) + 1
        case.validate_response(response, checks=CHECKS)

    exercise()
