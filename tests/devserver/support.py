"""Names and helpers shared by the development server's tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeAlias

from devserver.server import ModelServer
from devserver.settings import Settings
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from tests.devserver import tiny_model

# The generated gRPC stubs carry no annotations (mypy sees Any); named for the reader.
PredictionStub: TypeAlias = prediction_service_pb2_grpc.PredictionServiceStub
ModelStub: TypeAlias = model_service_pb2_grpc.ModelServiceStub

MODEL_NAME = "tiny"
LABELS = {"stable": 1, "canary": 2}


def warmup_requests() -> list[Any]:
    """Three warm-up records: one image, two images fetching scores only, describe."""
    one = tiny_model.predict_request(tiny_model.random_images(1, seed=100))
    two = tiny_model.predict_request(tiny_model.random_images(2, seed=101))
    two.output_filter.append("scores")
    describe = tiny_model.predict_request(tiny_model.random_images(1, seed=102), "describe")
    return [one, two, describe]


def serve(settings: Settings) -> Iterator[ModelServer]:
    """Start a server for the test, stop it afterwards."""
    server = ModelServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop(grace_seconds=1)
