"""The REST API against a real server over real HTTP, compared with the gRPC answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
import tensorflow as tf

from tests.devserver import tiny_model
from tests.devserver.support import MODEL_NAME, PredictionStub

K = len(tiny_model.LABELS)
TIMEOUT = 30


def get(rest_url: str, path: str) -> requests.Response:
    return requests.get(rest_url + path, timeout=TIMEOUT)


def post(rest_url: str, path: str, body: object) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(rest_url + path, data=data, timeout=TIMEOUT)


def grpc_scores(
    prediction_stub: PredictionStub, images: np.ndarray, version: int | None = None
) -> np.ndarray:
    request = tiny_model.predict_request(images)
    if version is not None:
        request.model_spec.version.value = version
    scores: np.ndarray = tf.make_ndarray(
        prediction_stub.Predict(request, timeout=TIMEOUT).outputs["scores"]
    )
    return scores


def test_model_status(rest_url: str) -> None:
    response = get(rest_url, f"/v1/models/{MODEL_NAME}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    ok = {"error_code": "OK", "error_message": ""}
    assert response.json() == {
        "model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": ok},
            {"version": "1", "state": "AVAILABLE", "status": ok},
        ]
    }


@pytest.mark.parametrize(
    ("path", "version"), [("/versions/1", "1"), ("/labels/canary", "2"), ("/labels/stable", "1")]
)
def test_model_status_of_one_version(rest_url: str, path: str, version: str) -> None:
    response = get(rest_url, f"/v1/models/{MODEL_NAME}{path}")
    assert response.status_code == 200
    assert [s["version"] for s in response.json()["model_version_status"]] == [version]


def test_model_metadata(rest_url: str) -> None:
    response = get(rest_url, f"/v1/models/{MODEL_NAME}/metadata")
    assert response.status_code == 200
    body = response.json()
    assert body["model_spec"] == {"name": MODEL_NAME, "signature_name": "", "version": "2"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    images = signatures["serving_default"]["inputs"]["images"]
    assert images["dtype"] == "DT_UINT8"
    assert [d["size"] for d in images["tensor_shape"]["dim"]] == [
        "-1",
        str(tiny_model.HEIGHT),
        str(tiny_model.WIDTH),
        "3",
    ]
    scores = signatures["serving_default"]["outputs"]["scores"]
    assert scores["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in scores["tensor_shape"]["dim"]] == ["-1", str(K)]
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert signatures["describe"]["outputs"]["description"]["dtype"] == "DT_STRING"


def test_model_metadata_of_version_1(rest_url: str) -> None:
    response = get(rest_url, f"/v1/models/{MODEL_NAME}/versions/1/metadata")
    assert response.json()["model_spec"]["version"] == "1"


def test_predict_columnar_matches_grpc(rest_url: str, prediction_stub: PredictionStub) -> None:
    images = tiny_model.random_images(2, seed=20)
    response = post(
        rest_url, f"/v1/models/{MODEL_NAME}:predict", {"inputs": {"images": images.tolist()}}
    )
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert outputs["labels"] == list(tiny_model.LABELS)
    # 9 significant digits round-trip float32 exactly.
    np.testing.assert_array_equal(
        np.array(outputs["scores"], dtype=np.float32), grpc_scores(prediction_stub, images)
    )


def test_predict_columnar_plain_value_for_a_single_input(
    rest_url: str, prediction_stub: PredictionStub
) -> None:
    images = tiny_model.random_images(1, seed=21)
    response = post(rest_url, f"/v1/models/{MODEL_NAME}:predict", {"inputs": images.tolist()})
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(
        np.array(response.json()["outputs"]["scores"], dtype=np.float32),
        grpc_scores(prediction_stub, images),
    )


def test_predict_row_format(rest_url: str, prediction_stub: PredictionStub) -> None:
    # Row format needs every output batched: `labels` is [K], so it works with K rows only.
    images = tiny_model.random_images(K, seed=22)
    response = post(
        rest_url,
        f"/v1/models/{MODEL_NAME}:predict",
        {"instances": [{"images": image.tolist()} for image in images]},
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    expected = grpc_scores(prediction_stub, images)
    assert len(predictions) == K
    for row, prediction in enumerate(predictions):
        assert prediction["labels"] == tiny_model.LABELS[row]
        np.testing.assert_array_equal(np.array(prediction["scores"], np.float32), expected[row])


def test_predict_row_format_with_unbatched_output_is_refused_like_tf_serving(rest_url: str) -> None:
    images = tiny_model.random_images(2, seed=23)
    response = post(rest_url, f"/v1/models/{MODEL_NAME}:predict", {"instances": images.tolist()})
    assert response.status_code == 400
    assert response.json() == {
        "error": f"Tensor name: scores has inconsistent batch size: 2 expecting: {K}"
    }


def test_predict_specific_version_and_signature(
    rest_url: str, prediction_stub: PredictionStub
) -> None:
    images = tiny_model.random_images(1, seed=24)
    response = post(
        rest_url,
        f"/v1/models/{MODEL_NAME}/versions/1:predict",
        {"inputs": {"images": images.tolist()}},
    )
    np.testing.assert_array_equal(
        np.array(response.json()["outputs"]["scores"], np.float32),
        grpc_scores(prediction_stub, images, version=1),
    )
    describe = post(
        rest_url,
        f"/v1/models/{MODEL_NAME}/labels/stable:predict",
        {"signature_name": "describe", "inputs": {"images": images.tolist()}},
    )
    assert describe.status_code == 200, describe.text
    assert json.loads(describe.json()["outputs"]["description"]) == tiny_model.description(1)


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        (
            "/v1/models/nope:predict",
            {"inputs": []},
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            f"/v1/models/{MODEL_NAME}/versions/9:predict",
            {"inputs": []},
            404,
            f"Servable not found for request: Specific({MODEL_NAME}, 9)",
        ),
        (
            f"/v1/models/{MODEL_NAME}/labels/beta:predict",
            {"inputs": []},
            400,
            "Unrecognized servable version label: beta",
        ),
        (
            f"/v1/models/{MODEL_NAME}:predict",
            {"signature_name": "nope", "inputs": []},
            400,
            'Serving signature name: "nope" not found in signature def',
        ),
        (
            f"/v1/models/{MODEL_NAME}:predict",
            {"signature_name": 5, "inputs": []},
            400,
            'JSON Value: {"signature_name":5,"inputs":[]} not formatted correctly. '
            "'signature_name' key must be a string value.",
        ),
        (f"/v1/models/{MODEL_NAME}:predict", {}, 400, "Missing 'inputs' or 'instances' key"),
        (
            f"/v1/models/{MODEL_NAME}:predict",
            {"inputs": {"pictures": [1]}},
            400,
            "Missing named input: images in 'inputs' object.",
        ),
        (
            f"/v1/models/{MODEL_NAME}:predict",
            {"inputs": [[[[1.5, 0, 0]]]]},
            400,
            "JSON Value: 1.5 Type: Number is not of expected type: uint8",
        ),
        (
            f"/v1/models/{MODEL_NAME}:predict",
            {"inputs": [[1, 2], [3]]},
            400,
            "Encountered list at unexpected size: 1 at level: 1 expected size: 2",
        ),
        (
            f"/v1/models/{MODEL_NAME}:predict",
            {"inputs": [[[[0, 0, 0]]]]},
            400,
            "input images has shape [1,1,1,3], which is incompatible with the signature "
            "shape [-1,8,8,3]",
        ),
        (f"/v1/models/{MODEL_NAME}:predict", b"", 400, "JSON Parse error: The document is empty"),
        (f"/v1/models/{MODEL_NAME}:predict", b"[1]", 400, "JSON Value: [1] Is not object"),
    ],
    ids=[
        "unknown-model",
        "unknown-version",
        "unknown-label",
        "unknown-signature",
        "signature-not-string",
        "no-inputs",
        "missing-named-input",
        "wrong-type",
        "ragged",
        "wrong-shape",
        "empty-body",
        "not-object",
    ],
)
def test_predict_errors(rest_url: str, path: str, body: object, status: int, error: str) -> None:
    response = post(rest_url, path, body)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"error": error}


def test_predict_bad_json_is_a_parse_error(rest_url: str) -> None:
    response = post(rest_url, f"/v1/models/{MODEL_NAME}:predict", b'{"inputs": [1,')
    assert response.status_code == 400
    assert response.json()["error"].startswith("JSON Parse error: ")


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/v1/models/nope", 404, "Could not find any versions of model nope"),
        (
            "GET",
            f"/v1/models/{MODEL_NAME}/versions/7",
            404,
            f"Could not find version 7 of model {MODEL_NAME}",
        ),
        ("GET", "/v1/models/nope/metadata", 404, "Servable not found for request: Latest(nope)"),
        ("GET", "/v1/models", 400, "Missing model name in request."),
        ("GET", "/v1/foo", 400, "Malformed request: GET /v1/foo"),
        (
            "DELETE",
            f"/v1/models/{MODEL_NAME}",
            400,
            f"Malformed request: DELETE /v1/models/{MODEL_NAME}",
        ),
        (
            "POST",
            f"/v1/models/{MODEL_NAME}:classify",
            501,
            "devserver does not implement the classify API",
        ),
    ],
)
def test_status_and_routing_errors(
    rest_url: str, method: str, path: str, status: int, error: str
) -> None:
    response = requests.request(method, rest_url + path, timeout=TIMEOUT)
    assert response.status_code == status
    assert response.json() == {"error": error}


def test_paths_outside_v1_are_404_without_body(rest_url: str) -> None:
    response = get(rest_url, "/healthz")
    assert response.status_code == 404
    assert response.content == b""
