"""The gRPC API against a real server and real SavedModels, over real gRPC."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)

from tests.devserver import tiny_model
from tests.devserver.support import MODEL_NAME, ModelStub, PredictionStub

K = len(tiny_model.LABELS)


def rpc_error(call: Callable[..., object], request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value


def test_predict_tensor_content_answers_latest_version_with_typed_fields(
    prediction_stub: PredictionStub,
) -> None:
    images = tiny_model.random_images(1, seed=1)
    response = prediction_stub.Predict(tiny_model.predict_request(images), timeout=30)

    assert response.model_spec.name == MODEL_NAME
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    scores = response.outputs["scores"]
    # TF Serving answers with typed value fields (Tensor::AsProtoField), not tensor_content.
    assert scores.dtype == types_pb2.DT_FLOAT and not scores.tensor_content
    assert [d.size for d in scores.tensor_shape.dim] == [1, K]
    np.testing.assert_allclose(
        np.array(scores.float_val).reshape(1, K), tiny_model.expected_scores(images, 2), atol=1e-6
    )
    assert list(response.outputs["labels"].string_val) == [s.encode() for s in tiny_model.LABELS]


def test_predict_batch_rows_each_match_their_image(prediction_stub: PredictionStub) -> None:
    images = tiny_model.random_images(5, seed=2)
    images[0] = 0
    images[1] = 255
    response = prediction_stub.Predict(tiny_model.predict_request(images), timeout=30)
    scores = tf.make_ndarray(response.outputs["scores"])
    assert scores.shape == (5, K)
    np.testing.assert_allclose(scores, tiny_model.expected_scores(images, 2), atol=1e-6)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-6)


def test_predict_accepts_typed_value_lists(prediction_stub: PredictionStub) -> None:
    images = tiny_model.random_images(2, seed=3)
    request = tiny_model.predict_request(images)
    typed = tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8)
    typed.tensor_shape.CopyFrom(tf.TensorShape(images.shape).as_proto())
    typed.int_val.extend(images.ravel().tolist())
    request.inputs["images"].CopyFrom(typed)

    response = prediction_stub.Predict(request, timeout=30)
    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["scores"]),
        tiny_model.expected_scores(images, 2),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("choose", "version"),
    [
        (lambda spec: spec.version.__setattr__("value", 1), 1),
        (lambda spec: spec.version.__setattr__("value", 2), 2),
        (lambda spec: setattr(spec, "version_label", "stable"), 1),
        (lambda spec: setattr(spec, "version_label", "canary"), 2),
    ],
    ids=["version-1", "version-2", "label-stable", "label-canary"],
)
def test_predict_version_selection(
    prediction_stub: PredictionStub, choose: Callable[[model_pb2.ModelSpec], object], version: int
) -> None:
    images = tiny_model.random_images(2, seed=4)
    request = tiny_model.predict_request(images)
    choose(request.model_spec)
    response = prediction_stub.Predict(request, timeout=30)
    assert response.model_spec.version.value == version
    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["scores"]),
        tiny_model.expected_scores(images, version),
        atol=1e-6,
    )


def test_versions_give_different_answers(prediction_stub: PredictionStub) -> None:
    images = tiny_model.random_images(1, seed=5)
    answers = []
    for version in (1, 2):
        request = tiny_model.predict_request(images)
        request.model_spec.version.value = version
        answers.append(tf.make_ndarray(prediction_stub.Predict(request).outputs["scores"]))
    assert not np.allclose(answers[0], answers[1])


def test_output_filter_returns_only_the_chosen_outputs(prediction_stub: PredictionStub) -> None:
    request = tiny_model.predict_request(tiny_model.random_images(3, seed=6))
    request.output_filter.append("scores")
    response = prediction_stub.Predict(request, timeout=30)
    assert set(response.outputs) == {"scores"}


def test_describe_signature_returns_the_description(prediction_stub: PredictionStub) -> None:
    request = tiny_model.predict_request(tiny_model.random_images(1, seed=7), "describe")
    response = prediction_stub.Predict(request, timeout=30)
    assert response.model_spec.signature_name == "describe"
    description = json.loads(tf.make_ndarray(response.outputs["description"]).item())
    assert description == tiny_model.description(2)
    assert [b.decode() for b in tf.make_ndarray(response.outputs["labels"])] == list(
        tiny_model.LABELS
    )


def test_get_model_metadata_packs_the_real_signature_defs(prediction_stub: PredictionStub) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL_NAME
    response = prediction_stub.GetModelMetadata(request, timeout=30)

    assert response.model_spec.name == MODEL_NAME
    assert response.model_spec.version.value == 2
    any_message = response.metadata["signature_def"]
    assert any_message.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert any_message.Unpack(signature_map)
    assert {"serving_default", "describe"} <= set(signature_map.signature_def)

    serving = signature_map.signature_def["serving_default"]
    images = serving.inputs["images"]
    assert images.dtype == types_pb2.DT_UINT8
    assert [d.size for d in images.tensor_shape.dim] == [
        -1,
        tiny_model.HEIGHT,
        tiny_model.WIDTH,
        3,
    ]
    assert serving.outputs["scores"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in serving.outputs["scores"].tensor_shape.dim] == [-1, K]
    assert serving.outputs["labels"].dtype == types_pb2.DT_STRING
    assert [d.size for d in serving.outputs["labels"].tensor_shape.dim] == [K]
    describe = signature_map.signature_def["describe"]
    assert describe.outputs["description"].dtype == types_pb2.DT_STRING
    assert not describe.outputs["description"].tensor_shape.dim


def test_get_model_metadata_of_a_specific_version(prediction_stub: PredictionStub) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL_NAME
    request.model_spec.version.value = 1
    assert prediction_stub.GetModelMetadata(request, timeout=30).model_spec.version.value == 1


def test_get_model_status_lists_versions_newest_first(model_stub: ModelStub) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL_NAME
    response = model_stub.GetModelStatus(request, timeout=30)
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (2, available),
        (1, available),
    ]
    assert all(s.status.error_code == 0 for s in response.model_version_status)


def test_get_model_status_of_one_version(model_stub: ModelStub) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.version.value = 1
    response = model_stub.GetModelStatus(request, timeout=30)
    assert [s.version for s in response.model_version_status] == [1]


# -- errors: codes and messages as TF Serving sends them ----------------------------------


def _request(**changes: Any) -> predict_pb2.PredictRequest:
    request = tiny_model.predict_request(tiny_model.random_images(1, seed=8))
    for key, value in changes.items():
        if key == "name":
            request.model_spec.name = value
        elif key == "version":
            request.model_spec.version.value = value
        elif key == "label":
            request.model_spec.version_label = value
        elif key == "signature":
            request.model_spec.signature_name = value
    return request


def test_unknown_model_is_not_found(prediction_stub: PredictionStub) -> None:
    error = rpc_error(prediction_stub.Predict, _request(name="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Latest(nope)"


def test_unknown_version_is_not_found(prediction_stub: PredictionStub) -> None:
    error = rpc_error(prediction_stub.Predict, _request(version=7))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == f"Servable not found for request: Specific({MODEL_NAME}, 7)"


def test_unknown_label_is_invalid(prediction_stub: PredictionStub) -> None:
    error = rpc_error(prediction_stub.Predict, _request(label="beta"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Unrecognized servable version label: beta"


def test_missing_model_name_is_invalid(prediction_stub: PredictionStub) -> None:
    error = rpc_error(prediction_stub.Predict, _request(name=""))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "ModelSpec has no name specified."


def test_unknown_signature_is_failed_precondition(prediction_stub: PredictionStub) -> None:
    error = rpc_error(prediction_stub.Predict, _request(signature="nope"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == 'Serving signature key "nope" not found.'


def test_missing_input_is_invalid(prediction_stub: PredictionStub) -> None:
    request = _request()
    del request.inputs["images"]
    error = rpc_error(prediction_stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "input size does not match signature: 0!=1 len({}) != len({images}). "
        "Sent extra: {}. Missing but required: {images}."
    )


def test_extra_input_is_invalid(prediction_stub: PredictionStub) -> None:
    request = _request()
    request.inputs["extra"].CopyFrom(tf.make_tensor_proto([1.0]))
    error = rpc_error(prediction_stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "input size does not match signature: 2!=1 len({extra,images}) != len({images}). "
        "Sent extra: {extra}. Missing but required: {}."
    )


def test_unknown_input_name_is_invalid(prediction_stub: PredictionStub) -> None:
    request = _request()
    request.inputs["pictures"].CopyFrom(request.inputs["images"])
    del request.inputs["images"]
    error = rpc_error(prediction_stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(
        "Signature input alias: images(feed name: serving_default_images:0) not found in "
        "request and no default value provided. Inputs expected to be in the request {pictures}"
    )


def test_wrong_dtype_is_invalid(prediction_stub: PredictionStub) -> None:
    request = _request()
    request.inputs["images"].CopyFrom(
        tf.make_tensor_proto(np.zeros((1, tiny_model.HEIGHT, tiny_model.WIDTH, 3), np.float32))
    )
    error = rpc_error(prediction_stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Expects arg[0] to be uint8 but float is provided"


@pytest.mark.parametrize("shape", [(1, 4, 4, 3), (8, 8, 3), (1, 8, 8, 1)])
def test_wrong_shape_is_invalid(prediction_stub: PredictionStub, shape: tuple[int, ...]) -> None:
    request = _request()
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros(shape, np.uint8)))
    error = rpc_error(prediction_stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "incompatible with the signature shape [-1,8,8,3]" in error.details()


def test_unparsable_tensor_is_invalid(prediction_stub: PredictionStub) -> None:
    request = _request()
    request.inputs["images"].tensor_content = b"\x00" * 5
    error = rpc_error(prediction_stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "tensor parsing error: images"


def test_unknown_output_filter_is_invalid(prediction_stub: PredictionStub) -> None:
    request = _request()
    request.output_filter.append("probabilities")
    error = rpc_error(prediction_stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "output tensor alias not found in signature: probabilities Outputs expected to be in "
        "the set {labels,scores}."
    )


def test_duplicate_output_filter_is_invalid(prediction_stub: PredictionStub) -> None:
    request = _request()
    request.output_filter.extend(["scores", "scores"])
    error = rpc_error(prediction_stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "duplicate output tensor alias: scores"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ([], "GetModelMetadataRequest must specify at least one metadata_field"),
        (["signature_def", "graph"], "Metadata field graph is not supported"),
    ],
)
def test_bad_metadata_field_is_invalid(
    prediction_stub: PredictionStub, fields: list[str], message: str
) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
    request.model_spec.name = MODEL_NAME
    error = rpc_error(prediction_stub.GetModelMetadata, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == message


def test_metadata_of_unknown_model_is_not_found(prediction_stub: PredictionStub) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "nope"
    error = rpc_error(prediction_stub.GetModelMetadata, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Latest(nope)"


def test_status_of_unknown_model_or_version_is_not_found(model_stub: ModelStub) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "nope"
    error = rpc_error(model_stub.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Could not find any versions of model nope"

    request.model_spec.name = MODEL_NAME
    request.model_spec.version.value = 7
    error = rpc_error(model_stub.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == f"Could not find version 7 of model {MODEL_NAME}"


def test_classify_is_unimplemented(prediction_stub: PredictionStub) -> None:
    from tensorflow_serving.apis import classification_pb2

    error = rpc_error(prediction_stub.Classify, classification_pb2.ClassificationRequest())
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


def test_request_id_metadata_is_logged(
    prediction_stub: PredictionStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="devserver.requests")
    prediction_stub.Predict(_request(), timeout=30, metadata=[("x-request-id", "req-test-42")])
    assert any(
        "x-request-id=req-test-42" in record.getMessage() and "-> OK" in record.getMessage()
        for record in caplog.records
    )
