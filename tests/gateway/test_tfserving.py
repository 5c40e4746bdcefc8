"""The TF Serving client over real gRPC (a scripted PredictionService on loopback).

The real model behind the development server is exercised in tests/e2e; here the server
scripts the failures: status codes, outages, slow answers and models the gateway cannot feed.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import requests
from flask import Flask
from gateway.app import create_app
from gateway.errors import (
    GatewayError,
    ModelError,
    ModelIncompatible,
    ModelTimeout,
    ModelUnavailable,
    ModelVersionUnavailable,
)
from gateway.settings import Settings
from gateway.tfserving import TFServingPredictor, channel_options, service_config
from tensorflow.core.framework import types_pb2

from tests.gateway.scripted_serving import LABELS, ModelShape, ScriptedServing, serve_scripted
from tests.gateway.support import COLOURS, assert_documented, concurrently, image_bytes
from tests.helpers import serve_wsgi

IMAGES = np.stack([np.full((32, 32, 3), COLOURS[c], dtype=np.uint8) for c in LABELS])


def settings_for(port: int, **overrides: Any) -> Settings:
    base = Settings(tf_serving_host=f"127.0.0.1:{port}", model_timeout=1.0, retry_after=9)
    return replace(base, **overrides)


@pytest.fixture
def serving() -> Iterator[tuple[ScriptedServing, int]]:
    servicer = ScriptedServing()
    with serve_scripted(servicer) as port:
        yield servicer, port


@pytest.fixture
def predictor(serving: tuple[ScriptedServing, int]) -> Iterator[TFServingPredictor]:
    client = TFServingPredictor(settings_for(serving[1]))
    yield client
    client.close()


def test_model_is_described_by_the_server(predictor: TFServingPredictor) -> None:
    info = predictor.model_info("rid-1")
    assert info.name == "clothing-model" and info.version == 7
    assert info.labels == LABELS
    assert (info.resize.height, info.resize.width) == (32, 32)
    assert info.resize.interpolation == "bilinear" and info.resize.jpeg_draft is False
    assert info.input_name == "images" and info.scores_output == "scores"


def test_predict_sends_one_uint8_tensor_content_batch(
    serving: tuple[ScriptedServing, int], predictor: TFServingPredictor
) -> None:
    servicer, _ = serving
    prediction = predictor.predict(IMAGES, "batch-request-1")
    assert [LABELS[i] for i in prediction.scores.argmax(axis=1)] == list(LABELS)
    np.testing.assert_allclose(prediction.scores.sum(axis=1), 1.0, rtol=1e-5)
    request = servicer.requests[-1]
    tensor = request.inputs["images"]
    assert request.model_spec.signature_name == "serving_default"
    assert tensor.dtype == types_pb2.DT_UINT8
    assert [d.size for d in tensor.tensor_shape.dim] == [3, 32, 32, 3]
    assert len(tensor.tensor_content) == IMAGES.nbytes and not tensor.int_val
    assert ("Predict", "batch-request-1") in servicer.calls


@pytest.mark.parametrize(
    ("request_id", "error", "retry_after"),
    [
        ("grpc-UNAVAILABLE", ModelUnavailable, 9),
        ("grpc-NOT_FOUND", ModelVersionUnavailable, 9),
        ("grpc-RESOURCE_EXHAUSTED", ModelUnavailable, 9),
        ("grpc-slow", ModelTimeout, None),
        ("grpc-INVALID_ARGUMENT", ModelError, None),
        ("grpc-INTERNAL", ModelError, None),
    ],
)
def test_grpc_status_codes_map_to_gateway_errors(
    predictor: TFServingPredictor,
    request_id: str,
    error: type[GatewayError],
    retry_after: int | None,
) -> None:
    predictor.model_info("warm-up")
    with pytest.raises(error) as caught:
        predictor.predict(IMAGES[:1], request_id)
    assert type(caught.value) is error
    assert caught.value.retry_after == retry_after


def test_unavailable_is_retried_with_backoff(
    serving: tuple[ScriptedServing, int], predictor: TFServingPredictor
) -> None:
    servicer, _ = serving
    predictor.model_info("warm-up")
    servicer.fail_next_unavailable = 2
    prediction = predictor.predict(IMAGES[:1], "retried")
    assert prediction.scores.shape == (1, 3)
    assert [call for call in servicer.calls if call[1] == "retried"] == [("Predict", "retried")] * 3


def test_service_config_has_retries_and_balancing() -> None:
    import json

    config = json.loads(service_config(Settings(tf_serving_host="dns:///tfs:8500")))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    policy = config["methodConfig"][0]["retryPolicy"]
    assert (
        policy["retryableStatusCodes"] == ["UNAVAILABLE", "NOT_FOUND"]
        and policy["maxAttempts"] == 3
    )


@pytest.mark.parametrize(
    ("shape", "fallback", "message"),
    [
        (ModelShape(input_dtype=types_pb2.DT_FLOAT), (), "is float [-1, 32, 32, 3]"),
        (ModelShape(input_dims=[-1, 32, 32, 1]), (), "uint8 [-1, H, W, 3]"),
        (ModelShape(input_dims=None), (), "unknown rank"),
        (ModelShape(describe=False), (), "no 'describe' signature and GATEWAY_LABELS is not set"),
        (ModelShape(describe=False), ("a", "b"), "2 labels"),
        (ModelShape(interpolation="magic"), (), "unknown resize interpolation 'magic'"),
    ],
)
def test_models_the_gateway_cannot_feed_are_named(
    shape: ModelShape, fallback: tuple[str, ...], message: str
) -> None:
    with serve_scripted(ScriptedServing(shape)) as port:
        client = TFServingPredictor(settings_for(port, fallback_labels=fallback))
        with pytest.raises(ModelIncompatible, match=message.replace("[", r"\[")):
            client.model_info("check")
        client.close()


def test_model_without_describe_uses_the_fallback_settings() -> None:
    with serve_scripted(ScriptedServing(ModelShape(describe=False))) as port:
        client = TFServingPredictor(
            settings_for(port, fallback_labels=LABELS, fallback_interpolation="lanczos")
        )
        info = client.model_info("check")
        assert info.labels == LABELS and info.resize.interpolation == "lanczos"
        assert client.predict(IMAGES, "x").scores.shape == (3, 3)
        client.close()


# -- through the HTTP app ---------------------------------------------------------------------


def upload(base: str, request_id: str) -> requests.Response:
    return requests.post(
        f"{base}/predict",
        files={"file": ("p.png", image_bytes("PNG", COLOURS["blue"]))},
        headers={"X-Request-ID": request_id},
        timeout=30,
    )


@pytest.fixture
def app_over_grpc(serving: tuple[ScriptedServing, int]) -> Iterator[str]:
    app: Flask = create_app(settings_for(serving[1]))
    yield from serve_wsgi(app)


@pytest.mark.parametrize(
    ("request_id", "status", "code"),
    [
        ("grpc-UNAVAILABLE", 503, "model_unavailable"),
        ("grpc-slow", 504, "model_timeout"),
        ("grpc-INVALID_ARGUMENT", 502, "model_error"),
    ],
)
def test_model_failures_over_http(
    app_over_grpc: str, request_id: str, status: int, code: str
) -> None:
    assert upload(app_over_grpc, "warm-up").status_code == 200
    bad, good = concurrently(
        lambda: upload(app_over_grpc, request_id), lambda: upload(app_over_grpc, "good-1")
    )
    assert bad.status_code == status
    assert bad.json()["error"]["code"] == code
    assert_documented("/predict", "POST", status, bad.headers["Content-Type"], bad.json())
    if status == 503:
        assert bad.headers["Retry-After"] == "9"
    assert good.status_code == 200 and good.json()["top"] == "blue"
    assert good.json()["model"] == {"name": "clothing-model", "version": 7, "route": "latest"}


def test_readiness_survives_a_model_server_blip() -> None:
    servicer = ScriptedServing()
    with serve_scripted(servicer) as port:
        app = create_app(settings_for(port, model_info_ttl=0.0))
        served = serve_wsgi(app)
        base = next(served)
        assert requests.get(f"{base}/readyz", timeout=10).status_code == 200
    # the model server is gone: still ready (the Service keeps this replica), requests get 503
    ready = requests.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200
    answer = upload(base, "during-outage")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "9"
    assert answer.json()["error"]["code"] == "model_unavailable"
    served.close()


def test_readiness_does_not_wait_for_a_hung_model_server() -> None:
    servicer = ScriptedServing()
    with serve_scripted(servicer) as port:
        app = create_app(settings_for(port, model_info_ttl=0.0, model_timeout=5.0))
        served = serve_wsgi(app)
        base = next(served)
        assert requests.get(f"{base}/readyz", timeout=10).status_code == 200
    # the port now accepts connections and never answers: a refresh would hang for 5 s
    with socket.socket() as hung:
        hung.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        hung.bind(("127.0.0.1", port))
        hung.listen(16)
        ready = requests.get(f"{base}/readyz", timeout=2)
        assert ready.status_code == 200
        assert ready.json()["model"] == {"name": "clothing-model", "version": 7, "route": "latest"}
    served.close()


def test_not_ready_until_the_model_was_described_once() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here
    served = serve_wsgi(create_app(settings_for(port)))
    base = next(served)
    ready = requests.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "model_unavailable"
    assert_documented("/readyz", "GET", 503, ready.headers["Content-Type"], ready.json())
    served.close()


def test_an_incompatible_model_is_explained_by_readyz() -> None:
    with serve_scripted(ScriptedServing(ModelShape(input_dtype=types_pb2.DT_FLOAT))) as port:
        served = serve_wsgi(create_app(settings_for(port)))
        base = next(served)
        ready = requests.get(f"{base}/readyz", timeout=10)
        served.close()
    assert ready.status_code == 503 and ready.headers["Retry-After"] == "9"
    assert ready.json()["error"]["code"] == "model_incompatible"
    assert "uint8" in ready.json()["error"]["message"]


def test_dns_target_with_round_robin_works() -> None:
    servicer = ScriptedServing()
    with serve_scripted(servicer) as port:
        settings = replace(settings_for(port), tf_serving_host=f"dns:///localhost:{port}")
        assert settings.load_balancing == "round_robin"
        client = TFServingPredictor(settings)
        assert client.predict(IMAGES, "dns-1").scores.shape == (3, 3)
        client.close()
    assert ("Predict", "dns-1") in servicer.calls


def test_round_robin_spreads_calls_over_every_replica() -> None:
    # the same balancing policy as for a headless Service's DNS name, with a static list
    first, second = ScriptedServing(), ScriptedServing()
    with serve_scripted(first) as port_a, serve_scripted(second) as port_b:
        target = f"ipv4:127.0.0.1:{port_a},127.0.0.1:{port_b}"
        client = TFServingPredictor(
            replace(settings_for(port_a), tf_serving_host=target, lb_policy="round_robin")
        )
        for n in range(20):
            client.predict(IMAGES[:1], f"rr-{n}")
        client.close()
    assert sum(m == "Predict" for m, _ in first.calls) >= 5
    assert sum(m == "Predict" for m, _ in second.calls) >= 5


def test_each_process_makes_its_own_channel(
    predictor: TFServingPredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = predictor.stub()
    assert predictor.stub() is first  # one channel per process, reused
    monkeypatch.setattr("gateway.tfserving.os.getpid", lambda: -1)  # as in a forked worker
    assert predictor.stub() is not first
    assert predictor.predict(IMAGES[:1], "after-fork").scores.shape == (1, 3)


def test_reconnect_backoff_is_capped_so_workers_recover_soon_after_an_outage() -> None:
    options = dict(channel_options(Settings()))
    assert options["grpc.max_reconnect_backoff_ms"] <= 5_000
    assert options["grpc.initial_reconnect_backoff_ms"] <= options["grpc.max_reconnect_backoff_ms"]


def test_two_versions_with_other_label_orders_behind_round_robin_never_mislabel() -> None:
    # a rolling update as the gateway sees it: replicas of version 7 and of version 8, whose
    # scores come in the reverse label order, behind one round-robin target
    old, new = ScriptedServing(), ScriptedServing(ModelShape(version=8, labels=LABELS[::-1]))
    with serve_scripted(old) as port_a, serve_scripted(new) as port_b:
        target = f"ipv4:127.0.0.1:{port_a},127.0.0.1:{port_b}"
        app = create_app(
            replace(settings_for(port_a), tf_serving_host=target, lb_policy="round_robin",
                    model_info_ttl=0.0)
        )  # fmt: skip
        served = serve_wsgi(app)
        base = next(served)
        answers = [upload(base, f"rollout-{n}") for n in range(30)]
        served.close()
    answered = [a for a in answers if a.status_code == 200]
    assert all(a.json()["top"] == "blue" for a in answered)  # the photo is blue
    assert answered and {a.json()["model"]["version"] for a in answered} <= {7, 8}
    assert any(method == "Predict" for method, _ in new.calls)  # both replicas were asked
    for answer in answers:
        if answer.status_code != 200:
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "9"
    # every Predict was pinned to the version whose description prepared it
    for servicer in (old, new):
        for request in servicer.requests:
            assert request.model_spec.version.value == servicer.shape.version


def test_a_version_gone_from_the_replica_is_re_resolved_and_retried_once() -> None:
    servicer = ScriptedServing()
    with serve_scripted(servicer) as port:
        predictor = TFServingPredictor(settings_for(port))
        info = predictor.model_info("warm-up")
        servicer.shape.version = 8  # the model server now serves version 8 only
        with pytest.raises(ModelVersionUnavailable) as caught:
            predictor.predict(IMAGES[:1], "pinned-7", info=info)
        assert caught.value.retry_after == 9
        # pinned calls that find nothing are retried by gRPC on (here: the same) replica
        assert [c for c in servicer.calls if c[1] == "pinned-7"] == [("Predict", "pinned-7")] * 3
        fresh = predictor.model_info("after")  # the failure forgot where the route leads
        assert fresh.version == 8
        assert predictor.predict(IMAGES[:1], "pinned-8", info=fresh).model.version == 8
        predictor.close()
