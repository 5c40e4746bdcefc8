"""The gRPC API: tensorflow.serving.PredictionService and ModelService on a thread pool."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from devserver.errors import ServingError
from devserver.manager import ServableManager
from devserver.metadata import get_model_metadata, get_model_status
from devserver.predict import Predictor

log = logging.getLogger("devserver.requests")

REQUEST_ID_KEY = "x-request-id"

Response = TypeVar("Response")


def request_id(context: grpc.ServicerContext) -> str:
    """The caller's x-request-id metadata, or '-'."""
    for key, value in context.invocation_metadata() or ():
        if key.lower() == REQUEST_ID_KEY:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return "-"


def _serve(
    context: grpc.ServicerContext,
    method: str,
    spec: model_pb2.ModelSpec,
    handler: Callable[[], Response],
) -> Response:
    rid = request_id(context)
    version = spec.version.value if spec.HasField("version") else spec.version_label or "latest"
    try:
        response = handler()
    except ServingError as err:
        log.info(
            "grpc %s model=%s version=%s -> %s: %s x-request-id=%s",
            method, spec.name, version, err.code.name, err.message, rid,
        )  # fmt: skip
        context.abort(err.code, err.message)
    log.info("grpc %s model=%s version=%s -> OK x-request-id=%s", method, spec.name, version, rid)
    return response


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress, MultiInference are not implemented."""

    def __init__(self, predictor: Predictor, manager: ServableManager) -> None:
        self._predictor = predictor
        self._manager = manager

    def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        """PredictionService/Predict."""
        return _serve(
            context, "Predict", request.model_spec, lambda: self._predictor.predict(request)
        )

    def GetModelMetadata(
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest,
        context: grpc.ServicerContext,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """PredictionService/GetModelMetadata (metadata_field signature_def)."""
        return _serve(
            context,
            "GetModelMetadata",
            request.model_spec,
            lambda: get_model_metadata(self._manager, request),
        )


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus; HandleReloadConfigRequest is not implemented."""

    def __init__(self, manager: ServableManager) -> None:
        self._manager = manager

    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """ModelService/GetModelStatus."""
        return _serve(
            context,
            "GetModelStatus",
            request.model_spec,
            lambda: get_model_status(self._manager, request),
        )


def host_port(host: str, port: int) -> str:
    """`host:port`, bracketing IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def create_grpc_server(
    predictor: Predictor,
    manager: ServableManager,
    host: str,
    port: int,
    max_threads: int,
    channel_arguments: Sequence[tuple[str, int | str]] = (),
) -> grpc.Server:
    """A started-ready gRPC server bound to host:port (raises OSError if it cannot bind).

    `channel_arguments` are added after the server's own, as TF Serving adds
    --grpc_channel_arguments (e.g. grpc.max_connection_age_ms, which makes clients
    re-resolve DNS and so reach new replicas: grpc/grpc issue 12295).
    """
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="devserver-grpc"),
        options=[
            # TF Serving lifts gRPC's 4 MB limit (SetMaxMessageSize(INT_MAX)).
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            # Fail loudly when the port is taken instead of sharing it.
            ("grpc.so_reuseport", 0),
            *channel_arguments,
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(predictor, manager), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
    address = host_port(host, port)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as err:
        raise OSError(f"cannot bind gRPC to {address}: {err}") from None
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    return server
