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
    ModelVersionUnavailable,
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
from gateway.routing import CANARY, LATEST, STABLE
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
                    # NOT_FOUND: a call pinned to a model version landed on a replica that
                    # does not serve it (a rollout); the retry's pick goes to another one
                    "retryableStatusCodes": ["UNAVAILABLE", "NOT_FOUND"],
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
    """A `Predictor` talking to TF Serving over one gRPC channel per process.

    Version consistency: a description is cached per model version, and every Predict is
    pinned to the version (`model_spec.version`) whose description resized the images, so
    the scores are labelled by the version that computed them even when replicas behind one
    target serve different versions (a rolling update) or a label moves between versions.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._channel: grpc.Channel | None = None
        self._stub: prediction_service_pb2_grpc.PredictionServiceStub | None = None
        # route (stable, canary) -> (description of the version it leads to, expiry)
        self._routes: dict[str, tuple[ModelInfo, float]] = {}
        # version -> (its description, expiry): what a version's scores mean
        self._versions: dict[int, tuple[ModelInfo, float]] = {}
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
        try:
            return self._raw_call(method, request, request_id)
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, self.settings, what) from None

    def _raw_call(self, method: str, request: Any, request_id: str) -> Any:
        rpc = getattr(self.stub(), method)
        return rpc(
            request,
            timeout=self.settings.model_timeout,
            metadata=(("x-request-id", request_id),),
        )

    # -- model discovery --------------------------------------------------------------------
    def model_info(
        self, request_id: str, *, allow_stale: bool = False, route: str = STABLE
    ) -> ModelInfo:
        """The description of the version `route` leads to, re-resolved after the TTL.

        A failed re-read keeps the last description (TF Serving blips must not fail requests
        that a known version can answer); an incompatible model is never kept.
        """
        cached = self._routes.get(route)
        if cached is not None and (allow_stale or time.monotonic() < cached[1]):
            return cached[0]
        with self._info_lock:
            cached = self._routes.get(route)
            if cached is not None and time.monotonic() < cached[1]:
                return cached[0]
            try:
                fresh = self._resolve(route, request_id)
            except GatewayError as exc:
                if isinstance(exc, ModelIncompatible) and exc.retry_after is None:
                    exc.retry_after = self.settings.retry_after  # a fitting model may come
                if cached is None or isinstance(exc, ModelIncompatible):
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
                    cached[0].version,
                    exc.message,
                    extra={"request_id": request_id},
                )
                expires = time.monotonic() + min(5.0, self.settings.model_info_ttl)
                self._routes[route] = (cached[0], expires)
                return cached[0]
            if cached is None or fresh != cached[0] or fresh.route != cached[0].route:
                log.info(
                    "model %s: %s leads to version %s (%s): %d labels, input %dx%d, resize %s%s",
                    fresh.name,
                    route,
                    fresh.version,
                    fresh.route,
                    len(fresh.labels),
                    fresh.resize.width,
                    fresh.resize.height,
                    fresh.resize.interpolation,
                    " + jpeg draft" if fresh.resize.jpeg_draft else "",
                    extra={"request_id": request_id},
                )
            self._routes[route] = (fresh, time.monotonic() + self.settings.model_info_ttl)
            return fresh

    def invalidate(self, route: str | None = None) -> None:
        """Forget where a route (every route when None) leads so the next call re-reads it."""
        with self._info_lock:
            for name in [route] if route is not None else list(self._routes):
                if name in self._routes:
                    self._routes[name] = (self._routes[name][0], 0.0)

    def _resolve(self, route: str, request_id: str) -> ModelInfo:
        """Ask TF Serving which version `route` names: its label, else stable, else latest."""
        labels = [CANARY, STABLE] if route == CANARY else [STABLE]
        for label in labels:
            response = self._metadata(request_id, label)
            if response is not None:
                return replace(self._describe_version(response, request_id), route=label)
        response = self._metadata(request_id, None)
        assert response is not None
        return replace(self._describe_version(response, request_id), route=LATEST)

    def _metadata(self, request_id: str, label: str | None) -> Any:
        """GetModelMetadata by label (None when TF Serving has no such label) or latest."""
        request = metadata_request(self.settings.model_name, label)
        try:
            return self._raw_call("GetModelMetadata", request, request_id)
        except grpc.RpcError as exc:
            # TF Serving: INVALID_ARGUMENT "Unrecognized servable version label: <label>"
            # (server_core.cc, GetModelVersionForLabel) when the config has no such label
            if (
                label is not None
                and isinstance(exc, grpc.Call)
                and exc.code() == grpc.StatusCode.INVALID_ARGUMENT
                and "version label" in (exc.details() or "")
            ):
                return None
            raise map_rpc_error(exc, self.settings, "GetModelMetadata") from None

    def _describe_version(self, response: Any, request_id: str) -> ModelInfo:
        """The description of the version a metadata answer is about (cached per version)."""
        version = response.model_spec.version.value
        cached = self._versions.get(version)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        info = self._info_from_metadata(response, request_id)
        self._versions[version] = (info, time.monotonic() + self.settings.model_info_ttl)
        return info

    def _info_from_metadata(self, response: Any, request_id: str) -> ModelInfo:
        """Read a version's signatures and description; check the gateway can feed it."""
        name = self.settings.model_name
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
            description = self._describe(defs[DESCRIBE_SIGNATURE], version, request_id)
            return info_from_description(name, version, serving, description)
        return self._fallback_info(name, version, serving)

    def _describe(self, signature: Any, version: int, request_id: str) -> dict[str, Any]:
        name = self.settings.model_name
        input_name, height, width = image_input(name, DESCRIBE_SIGNATURE, signature)
        if DESCRIPTION_OUTPUT not in signature.outputs:
            raise ModelIncompatible(
                f"model {name!r}: {DESCRIBE_SIGNATURE!r} has no {DESCRIPTION_OUTPUT!r} output"
            )
        request = describe_request(name, version, input_name, height, width)
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
    def predict(
        self, images: np.ndarray, request_id: str, *, info: ModelInfo | None = None
    ) -> Prediction:
        """Score a batch of uint8 NxHxWx3 images in one Predict pinned to `info`'s version."""
        info = info or self.model_info(request_id)
        request = predict_request(info, images)
        try:
            response = self._raw_call("Predict", request, request_id)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.NOT_FOUND:
                # "Servable not found for request: Specific(name, v)" even after gRPC's
                # retries on other replicas: the version is going away; the caller re-resolves
                self.invalidate()
                raise ModelVersionUnavailable(
                    f"model version {info.version} is not served by the model server that "
                    "was asked (a new version is probably being rolled out); retry",
                    retry_after=self.settings.retry_after,
                ) from None
            raise map_rpc_error(exc, self.settings, "Predict") from None
        served_version = response.model_spec.version.value
        if served_version != info.version:
            # TF Serving always answers a pinned request with that version; anything else
            # cannot be labelled with this description
            self.invalidate()
            raise ModelVersionUnavailable(
                f"asked model version {info.version}, the model server answered with "
                f"version {served_version}; retry",
                retry_after=self.settings.retry_after,
            )
        if info.scores_output not in response.outputs:
            raise ModelError(f"the model's answer has no {info.scores_output!r} output")
        scores = float_array(response.outputs[info.scores_output])
        if scores.shape != (len(images), len(info.labels)):
            # the version's model changed under the same number (re-exported in place):
            # describe it again rather than label these scores with the old description
            self._versions.pop(info.version, None)
            self.invalidate()
            raise ModelVersionUnavailable(
                f"model version {info.version} answered scores of shape "
                f"{list(scores.shape)} for {len(images)} images and {len(info.labels)} "
                "labels; it is probably being replaced, retry",
                retry_after=self.settings.retry_after,
            )
        return Prediction(model=info, scores=scores)
