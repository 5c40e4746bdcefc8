"""Shared fixtures: a real tiny SavedModel with two versions and a running devserver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from devserver.server import ModelServer
from devserver.settings import ModelConfig, Settings, VersionPolicy
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from clothing_tools.local_stack import free_port
from tests.devserver import tiny_model
from tests.devserver.support import LABELS, MODEL_NAME, serve, warmup_requests


@pytest.fixture(scope="session")
def model_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<tmp>/tiny/{1,2}; version 2 carries three warm-up records."""
    base = tmp_path_factory.mktemp("models") / MODEL_NAME
    tiny_model.build_version(base, 1)
    latest = tiny_model.build_version(base, 2)
    tiny_model.write_warmup(latest, warmup_requests())
    return base


@pytest.fixture(scope="session")
def server(model_base: Path) -> Iterator[ModelServer]:
    """Both versions served (policy all) with labels stable=1 and canary=2, no batching."""
    model = ModelConfig(MODEL_NAME, model_base, VersionPolicy("all"), LABELS)
    settings = Settings(
        models=(model,),
        grpc_port=free_port(),
        rest_api_port=free_port(),
        allow_version_labels_for_unavailable_models=True,
    )
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
