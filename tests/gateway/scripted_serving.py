"""A small real gRPC server speaking TF Serving's PredictionService, with scripted failures.

It describes a colour model (the contract's two signatures, 32x32 uint8 input, three labels)
and scores images by their mean colour; a request whose `x-request-id` is `grpc-<CODE>` is
aborted with that status code, `grpc-slow` sleeps past any deadline. Tests of the real model
use the development model server instead (tests/e2e).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

LABELS = ("red", "green", "blue")


def tensor_info(name: str, dtype: int, dims: list[int] | None) -> meta_graph_pb2.TensorInfo:
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims or []],
        unknown_rank=dims is None,
    )
    return meta_graph_pb2.TensorInfo(name=name + ":0", dtype=dtype, tensor_shape=shape)


@dataclass
class ModelShape:
    """What the scripted model declares."""

    input_dtype: int = types_pb2.DT_UINT8
    input_dims: list[int] | None = field(default_factory=lambda: [-1, 32, 32, 3])
    describe: bool = True
    version: int = 7
    interpolation: str = "bilinear"
    labels: tuple[str, ...] = LABELS  # the order of its scores (the same colour model)


class ScriptedServing(prediction_service_pb2_grpc.PredictionServiceServicer):
    """PredictionService with a colour model; failures chosen by the caller's request id."""

    def __init__(self, shape: ModelShape | None = None) -> None:
        self.shape = shape or ModelShape()
        self.calls: list[tuple[str, str]] = []  # (method, x-request-id)
        self.fail_next_unavailable = 0
        self.lock = threading.Lock()
        self.requests: list[predict_pb2.PredictRequest] = []

    def _script(self, method: str, context: grpc.ServicerContext) -> None:
        request_id = dict(context.invocation_metadata()).get("x-request-id", "")
        with self.lock:
            self.calls.append((method, request_id))
            if self.fail_next_unavailable > 0:
                self.fail_next_unavailable -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "scripted outage")
        if request_id == "grpc-slow":
            time.sleep(3)
        elif request_id.startswith("grpc-"):
            code = grpc.StatusCode[request_id.removeprefix("grpc-")]
            context.abort(code, f"scripted {code.name}")

    def signatures(self) -> get_model_metadata_pb2.SignatureDefMap:
        shape = self.shape
        defs = get_model_metadata_pb2.SignatureDefMap()
        serving = defs.signature_def["serving_default"]
        serving.inputs["images"].CopyFrom(
            tensor_info("serving_default_images", shape.input_dtype, shape.input_dims)
        )
        serving.outputs["scores"].CopyFrom(tensor_info("scores", types_pb2.DT_FLOAT, [-1, 3]))
        serving.outputs["labels"].CopyFrom(tensor_info("labels", types_pb2.DT_STRING, [-1, 3]))
        if shape.describe:
            describe = defs.signature_def["describe"]
            describe.inputs["images"].CopyFrom(
                tensor_info("describe_images", shape.input_dtype, shape.input_dims)
            )
            describe.outputs["description"].CopyFrom(
                tensor_info("description", types_pb2.DT_STRING, [-1])
            )
        return defs

    def description(self) -> dict[str, Any]:
        return {
            "format": 1,
            "name": "clothing-model",
            "version": self.shape.version,
            "labels": list(self.shape.labels),
            "input": {"name": "images", "height": 32, "width": 32, "channels": 3,
                      "dtype": "uint8"},
            "outputs": {"scores": "scores", "labels": "labels"},
            "preprocessing": "none",
            "resize": {"library": "pillow", "interpolation": self.shape.interpolation,
                       "jpeg_draft": False},
        }  # fmt: skip

    def _check_version(self, request: Any, context: grpc.ServicerContext) -> None:
        # as TF Serving without version labels in its config (server_core.cc)
        spec = request.model_spec
        choice = spec.WhichOneof("version_choice")
        if choice == "version_label":
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Unrecognized servable version label: {spec.version_label}",
            )
        if choice == "version" and spec.version.value != self.shape.version:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({spec.name}, {spec.version.value})",
            )

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._script("GetModelMetadata", context)
        self._check_version(request, context)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = self.shape.version
        response.metadata["signature_def"].Pack(self.signatures())
        return response

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._script("Predict", context)
        self._check_version(request, context)
        with self.lock:
            self.requests.append(request)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = self.shape.version
        response.model_spec.signature_name = request.model_spec.signature_name
        if request.model_spec.signature_name == "describe":
            response.outputs["description"].CopyFrom(
                tensor_pb2.TensorProto(
                    dtype=types_pb2.DT_STRING,
                    tensor_shape=tensor_shape_pb2.TensorShapeProto(
                        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]
                    ),
                    string_val=[json.dumps(self.description()).encode()],
                )
            )
            return response
        tensor = request.inputs["images"]
        dims = [d.size for d in tensor.tensor_shape.dim]
        images = np.frombuffer(tensor.tensor_content, dtype=np.uint8).reshape(dims)
        means = images.reshape(len(images), -1, 3).mean(axis=1) / 20.0
        exp = np.exp(means - means.max(axis=1, keepdims=True))
        scores = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        scores = np.ascontiguousarray(scores[:, [LABELS.index(x) for x in self.shape.labels]])
        response.outputs["scores"].CopyFrom(
            tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT,
                tensor_shape=tensor_shape_pb2.TensorShapeProto(
                    dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in scores.shape]
                ),
                tensor_content=scores.tobytes(),
            )
        )
        return response


@contextmanager
def serve_scripted(servicer: ScriptedServing, address: str = "127.0.0.1:0") -> Iterator[int]:
    """Run the servicer on a loopback address; yields the port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(address)
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None)
