"""Shared fixtures: a real tiny SavedModel with two versions and a running devserver."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from devserver.server import ModelServer
from devserver.settings import ModelConfig, Settings, VersionPolicy
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from tests.devserver import tiny_model

MODEL_NAME = "tiny"
LABELS = {"stable": 1, "canary": 2}


def free_port() -> int:
    """A port nobody listens on right now, on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def warmup_requests() -> list:
    """Three warm-up records: one image, two images fetching scores only, describe."""
    one = tiny_model.predict_request(tiny_model.random_images(1, seed=100))
    two = tiny_model.predict_request(tiny_model.random_images(2, seed=101))
    two.output_filter.append("scores")
    describe = tiny_model.predict_request(tiny_model.random_images(1, seed=102), "describe")
    return [one, two, describe]


@pytest.fixture(scope="session")
def model_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<tmp>/tiny/{1,2}; version 2 carries three warm-up records."""
    base = tmp_path_factory.mktemp("models") / MODEL_NAME
    tiny_model.build_version(base, 1)
    latest = tiny_model.build_version(base, 2)
    tiny_model.write_warmup(latest, warmup_requests())
    return base


def serve(settings: Settings) -> Iterator[ModelServer]:
    """Start a server for the test, stop it afterwards."""
    server = ModelServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop(grace_seconds=1)


@pytest.fixture(scope="session")
def server(model_base: Path) -> Iterator[ModelServer]:
    """Both versions served (policy all) with labels stable=1 and canary=2, no batching."""
    model = ModelConfig(MODEL_NAME, model_base, VersionPolicy("all"), LABELS)
    settings = Settings(models=(model,), grpc_port=free_port(), rest_api_port=free_port())
    yield from serve(settings)


@pytest.fixture(scope="session")
def channel(server: ModelServer) -> Iterator[grpc.Channel]:
    """A gRPC channel to the server."""
    with grpc.insecure_channel(f"127.0.0.1:{server.settings.grpc_port}") as opened:
        yield opened


@pytest.fixture(scope="session")
def prediction_stub(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    """tensorflow.serving.PredictionService client."""
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="session")
def model_stub(channel: grpc.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    """tensorflow.serving.ModelService client."""
    return model_service_pb2_grpc.ModelServiceStub(channel)


@pytest.fixture(scope="session")
def rest_url(server: ModelServer) -> str:
    """Base URL of the REST API."""
    return f"http://127.0.0.1:{server.settings.rest_api_port}"
