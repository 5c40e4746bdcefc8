"""TF Serving gRPC client: one channel per process, model discovery (metadata + `describe`)
cached with a TTL, batched Predict, and gRPC failures mapped to gateway errors.

The messages themselves are built and checked in `gateway.messages`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import replace
from typing import Any

import grpc
import numpy as np
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

from gateway.contract import DESCRIBE_SIGNATURE, DESCRIPTION_OUTPUT, SERVING_SIGNATURE, ResizeSpec
from gateway.errors import (
    GatewayError,
    ModelError,
    ModelIncompatible,
    ModelTimeout,
    ModelUnavailable,
)
from gateway.messages import (
    describe_request,
    float_array,
    image_input,
    info_from_description,
    metadata_request,
    predict_request,
    scores_output,
)
from gateway.predictor import ModelInfo, Prediction
from gateway.settings import Settings

log = logging.getLogger("gateway.tfserving")

_SERVICES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


def service_config(settings: Settings) -> str:
    """gRPC service config: retries with backoff on UNAVAILABLE and the balancing policy."""
    config: dict[str, Any] = {
        "loadBalancingConfig": [{settings.load_balancing: {}}],
        "methodConfig": [
            {
                "name": [{"service": service} for service in _SERVICES],
                "retryPolicy": {
                    "maxAttempts": settings.model_retries,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
    if settings.model_retries < 2:
        del config["methodConfig"][0]["retryPolicy"]
    return json.dumps(config)


def channel_options(settings: Settings) -> list[tuple[str, Any]]:
    """Channel arguments: service config, retries on, message limits sized for batches."""
    return [
        ("grpc.service_config", service_config(settings)),
        ("grpc.enable_retries", 1),
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        # re-resolve a headless Service's DNS name at most every 10 s when pods come and go
        ("grpc.dns_min_time_between_resolutions_ms", 10_000),
        # gRPC's reconnect backoff grows to 120 s by default: after a long model-server outage
        # a worker would keep answering 503 for up to two minutes once TF Serving is back.
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]


def map_rpc_error(exc: grpc.RpcError, settings: Settings, what: str) -> GatewayError:
    """Turn a gRPC failure into the gateway error with the fitting HTTP status."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ModelUnavailable(
            f"the model server is unavailable ({what}: {code.name}); retry later",
            retry_after=settings.retry_after,
        )
    if code == grpc.StatusCode.NOT_FOUND:
        return ModelUnavailable(
            f"the model is not loaded ({what}: {details}); retry later",
            retry_after=settings.retry_after,
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ModelUnavailable(
            f"the model server is overloaded or the request is too large ({details})",
            retry_after=settings.retry_after,
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ModelTimeout(
            f"the model did not answer within {settings.model_timeout:g} s ({what})"
        )
    return ModelError(f"the model server failed ({what}: {code.name}: {details})")


class TFServingPredictor:
    """A `Predictor` talking to TF Serving over one gRPC channel per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._channel: grpc.Channel | None = None
        self._stub: prediction_service_pb2_grpc.PredictionServiceStub | None = None
        self._info: ModelInfo | None = None
        self._info_expires = 0.0
        self._info_lock = threading.Lock()

    # -- the channel ------------------------------------------------------------------------
    def stub(self) -> prediction_service_pb2_grpc.PredictionServiceStub:
        """The process's stub; the channel is created lazily, after any fork."""
        with self._lock:
            if self._stub is None or self._pid != os.getpid():
                # a channel inherited from a parent process must not be used; make our own
                self._channel = grpc.insecure_channel(
                    self.settings.tf_serving_host, options=channel_options(self.settings)
                )
                self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
                self._pid = os.getpid()
            return self._stub

    def close(self) -> None:
        """Close this process's channel."""
        with self._lock:
            if self._channel is not None and self._pid == os.getpid():
                self._channel.close()
            self._channel = self._stub = None

    def _call(self, method: str, request: Any, request_id: str, what: str) -> Any:
        rpc = getattr(self.stub(), method)
        try:
            return rpc(
                request,
                timeout=self.settings.model_timeout,
                metadata=(("x-request-id", request_id),),
            )
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, self.settings, what) from None

    # -- model discovery --------------------------------------------------------------------
    def model_info(self, request_id: str, *, allow_stale: bool = False) -> ModelInfo:
        """The cached model description, re-read after the TTL (a failed re-read keeps it)."""
        info = self._info
        if info is not None and (allow_stale or time.monotonic() < self._info_expires):
            return info
        with self._info_lock:
            if self._info is not None and time.monotonic() < self._info_expires:
                return self._info
            try:
                fresh = self.discover(request_id)
            except GatewayError as exc:
                if isinstance(exc, ModelIncompatible) and exc.retry_after is None:
                    exc.retry_after = self.settings.retry_after  # a fitting model may come
                if self._info is None or isinstance(exc, ModelIncompatible):
                    unfit = isinstance(exc, ModelIncompatible)
                    log.log(
                        logging.ERROR if unfit else logging.WARNING,
                        "model not usable: %s",
                        exc.message,
                        extra={"request_id": request_id, "error_code": exc.code},
                    )
                    raise
                # TF Serving blipped: keep serving with what we know and try again soon
                log.warning(
                    "model metadata refresh failed, keeping version %s: %s",
                    self._info.version,
                    exc.message,
                    extra={"request_id": request_id},
                )
                self._info_expires = time.monotonic() + min(5.0, self.settings.model_info_ttl)
                return self._info
            if fresh != self._info:
                log.info(
                    "model %s version %s: %d labels, input %dx%d, resize %s%s",
                    fresh.name,
                    fresh.version,
                    len(fresh.labels),
                    fresh.resize.width,
                    fresh.resize.height,
                    fresh.resize.interpolation,
                    " + jpeg draft" if fresh.resize.jpeg_draft else "",
                    extra={"request_id": request_id},
                )
            self._info = fresh
            self._info_expires = time.monotonic() + self.settings.model_info_ttl
            return fresh

    def invalidate(self) -> None:
        """Forget the cached description so the next call re-reads it."""
        self._info_expires = 0.0

    def discover(self, request_id: str) -> ModelInfo:
        """Read the served model's signatures and description and check the gateway can feed it."""
        name = self.settings.model_name
        request = metadata_request(name)
        response = self._call("GetModelMetadata", request, request_id, "GetModelMetadata")
        signatures = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" not in response.metadata or not response.metadata[
            "signature_def"
        ].Unpack(signatures):
            raise ModelIncompatible(f"model {name!r} reported no signature_def metadata")
        version = response.model_spec.version.value
        defs = signatures.signature_def
        if SERVING_SIGNATURE not in defs:
            raise ModelIncompatible(
                f"model {name!r} version {version} has no {SERVING_SIGNATURE!r} signature "
                f"(it has: {', '.join(sorted(defs)) or 'none'})"
            )
        serving = defs[SERVING_SIGNATURE]
        if DESCRIBE_SIGNATURE in defs:
            description = self._describe(defs[DESCRIBE_SIGNATURE], request_id)
            return info_from_description(name, version, serving, description)
        return self._fallback_info(name, version, serving)

    def _describe(self, signature: Any, request_id: str) -> dict[str, Any]:
        name = self.settings.model_name
        input_name, height, width = image_input(name, DESCRIBE_SIGNATURE, signature)
        if DESCRIPTION_OUTPUT not in signature.outputs:
            raise ModelIncompatible(
                f"model {name!r}: {DESCRIBE_SIGNATURE!r} has no {DESCRIPTION_OUTPUT!r} output"
            )
        request = describe_request(name, input_name, height, width)
        response = self._call("Predict", request, request_id, DESCRIBE_SIGNATURE)
        tensor = response.outputs[DESCRIPTION_OUTPUT]
        raw = tensor.string_val[0] if tensor.string_val else b""
        try:
            description = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelIncompatible(
                f"model {name!r}: its description is not JSON ({exc})"
            ) from None
        if not isinstance(description, dict):
            raise ModelIncompatible(f"model {name!r}: its description is not a JSON object")
        return description

    def _fallback_info(self, name: str, version: int, serving: Any) -> ModelInfo:
        labels = self.settings.fallback_labels
        if not labels:
            raise ModelIncompatible(
                f"model {name!r} version {version} has no 'describe' signature and "
                "GATEWAY_LABELS is not set, so the gateway does not know its labels"
            )
        input_name, height, width = image_input(name, SERVING_SIGNATURE, serving)
        scores = scores_output(name, serving, None, len(labels))
        return ModelInfo(
            name=name,
            version=version,
            labels=labels,
            resize=ResizeSpec(
                height,
                width,
                self.settings.fallback_interpolation,
                self.settings.fallback_jpeg_draft,
            ),
            input_name=input_name,
            scores_output=scores,
        )

    # -- prediction -------------------------------------------------------------------------
    def predict(self, images: np.ndarray, request_id: str) -> Prediction:
        """Score a batch of uint8 NxHxWx3 images in one Predict call."""
        info = self.model_info(request_id)
        request = predict_request(info, images)
        response = self._call("Predict", request, request_id, "Predict")
        if info.scores_output not in response.outputs:
            raise ModelError(f"the model's answer has no {info.scores_output!r} output")
        scores = float_array(response.outputs[info.scores_output])
        if scores.shape != (len(images), len(info.labels)):
            # most likely a new model version with other labels: re-read it next time
            self.invalidate()
            raise ModelUnavailable(
                f"the model answered scores of shape {list(scores.shape)} for "
                f"{len(images)} images and {len(info.labels)} labels; it is probably "
                "being replaced, retry",
                retry_after=1,
            )
        served_version = response.model_spec.version.value
        if served_version and served_version != info.version:
            self.invalidate()
            info = replace(info, version=served_version)
        return Prediction(model=info, scores=scores)
