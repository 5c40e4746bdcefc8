"""Predict: request validation, the graph run (direct or batched) and the response.

The checks run in TF Serving's order (`predict_util.cc`, `saved_model/util.cc`) with its
codes and messages. One difference: TF Serving leaves shape checking to the graph, whose
error text depends on the model; here a shape that does not fit the signature's TensorInfo
is refused up front with INVALID_ARGUMENT, the code the graph would give.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from gateway.contract import SERVING_SIGNATURE
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import predict_pb2

from devserver import tensors
from devserver.errors import FailedPrecondition, Internal, InvalidArgument, ServingError
from devserver.manager import ServableManager
from devserver.monitoring import RequestCounter
from devserver.servable import Servable

PREDICT_METHODS = (
    "tensorflow/serving/predict",
    "tensorflow/serving/classify",
    "tensorflow/serving/regress",
)

# (servable, signature name, validated inputs, output aliases) -> outputs
Runner = Callable[[Servable, str, dict[str, np.ndarray], list[str]], dict[str, np.ndarray]]


def direct_runner(
    servable: Servable, signature_name: str, inputs: dict[str, np.ndarray], aliases: list[str]
) -> dict[str, np.ndarray]:
    """Run each request on its own (no --enable_batching)."""
    return servable.run(signature_name, inputs, aliases)


class Predictor:
    """The Predict API shared by gRPC, REST and warm-up replay."""

    def __init__(self, manager: ServableManager, runner: Runner = direct_runner) -> None:
        self._manager = manager
        self._runner = runner
        self.requests = RequestCounter()

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        """Answer a PredictRequest from whichever servable its ModelSpec names (counted)."""
        try:
            if not request.HasField("model_spec"):
                raise InvalidArgument("Missing ModelSpec")
            response = self.predict_on(self._manager.resolve(request.model_spec), request)
        except ServingError as err:
            self.requests.record(request.model_spec.name, err.code.name)
            raise
        self.requests.record(request.model_spec.name, "OK")
        return response

    def predict_on(
        self, servable: Servable, request: predict_pb2.PredictRequest
    ) -> predict_pb2.PredictResponse:
        """Answer a PredictRequest from a given servable (warm-up uses this before serving)."""
        signature_name = request.model_spec.signature_name or SERVING_SIGNATURE
        signature = signature_def(servable, signature_name)
        inputs = input_values(signature, request.inputs)
        aliases = output_aliases(signature, list(request.output_filter))
        check_feeds(signature, inputs)
        if not servable.has_function(signature_name):
            raise FailedPrecondition(f'Serving signature key "{signature_name}" not found.')
        outputs = self._runner(servable, signature_name, inputs, aliases)

        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name or servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for alias in aliases:
            response.outputs[alias].CopyFrom(tensors.as_proto_field(outputs[alias]))
        return response


def signature_def(servable: Servable, signature_name: str) -> meta_graph_pb2.SignatureDef:
    """The named SignatureDef, checked the way predict_util's VerifySignature does."""
    signature = servable.signature_defs.get(signature_name)
    if signature is None:
        raise FailedPrecondition(f'Serving signature key "{signature_name}" not found.')
    if signature.method_name not in PREDICT_METHODS:
        raise Internal(
            "Expected prediction signature method_name to be one of {"
            + ", ".join(PREDICT_METHODS)
            + f"}}. Was: {signature.method_name}"
        )
    return signature


def input_values(
    signature: meta_graph_pb2.SignatureDef, request_inputs: Mapping[str, tensor_pb2.TensorProto]
) -> dict[str, np.ndarray]:
    """Request tensors matched to signature inputs by alias, then parsed to arrays."""
    sent, expected = sorted(request_inputs), sorted(signature.inputs)
    if len(sent) > len(expected) or (len(sent) < len(expected) and not signature.defaults):
        raise InvalidArgument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sent)}}}) != len({{{','.join(expected)}}}). "
            f"Sent extra: {{{','.join(sorted(set(sent) - set(expected)))}}}. "
            f"Missing but required: {{{','.join(sorted(set(expected) - set(sent)))}}}."
        )
    values: dict[str, np.ndarray] = {}
    for alias in expected:
        if alias in request_inputs:
            proto = request_inputs[alias]
        elif alias in signature.defaults:
            proto = signature.defaults[alias]
        else:
            feed_name = signature.inputs[alias].name
            raise InvalidArgument(
                f"Signature input alias: {alias}(feed name: {feed_name}) not found in request "
                f"and no default value provided. Inputs expected to be in the request "
                f"{{{','.join(sent)}}}, or default input alias set: "
                f"{','.join(sorted(signature.defaults))}"
            )
        values[alias] = tensors.to_ndarray(proto, alias)
    unused = set(sent) - set(expected)
    if unused:
        used = sorted(set(sent) & set(expected))
        raise InvalidArgument(
            f"Inputs contains invalid name. Used request inputs: {','.join(used)}, "
            f"request input: {','.join(sent)}"
        )
    return values


def output_aliases(signature: meta_graph_pb2.SignatureDef, output_filter: list[str]) -> list[str]:
    """The outputs to fetch: the filter in request order, or every output when empty."""
    seen: list[str] = []
    for alias in output_filter:
        if alias not in signature.outputs:
            raise InvalidArgument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise InvalidArgument(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen or sorted(signature.outputs)


def check_feeds(signature: meta_graph_pb2.SignatureDef, inputs: Mapping[str, np.ndarray]) -> None:
    """Refuse a dtype (TensorFlow's call-frame wording) or shape the signature cannot take."""
    feeds = sorted(inputs, key=lambda alias: signature.inputs[alias].name)
    for index, alias in enumerate(feeds):
        info, value = signature.inputs[alias], inputs[alias]
        actual = tensors.dtype_of(value)
        if actual != info.dtype:
            raise InvalidArgument(
                f"Expects arg[{index}] to be {tensors.dtype_string(info.dtype)} but "
                f"{tensors.dtype_string(actual)} is provided"
            )
        if not tensors.shape_compatible(info.tensor_shape, value.shape):
            raise InvalidArgument(
                f"input {alias} has shape {tensors.shape_string(value.shape)}, which is "
                f"incompatible with the signature shape "
                f"{tensors.shape_string(info.tensor_shape)}"
            )
