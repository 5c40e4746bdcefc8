"""A gateway written the way the seed's was: the baseline of B2 and B3 (runs in .venv-seed).

    gunicorn --pythonpath REPO benchmarks.seed_gateway:app

Flask, keras-image-helper's xception preprocessor (a urllib download, Pillow NEAREST resize,
float32 `x/127.5-1`) and `tf.make_tensor_proto`, one gRPC channel opened at import, the
`input_8`/`dense_7` contract (see benchmarks/seed_model.py). Only `/readyz` is added, so its
cold start is timed like ours; it answers as soon as the app is imported, because the seed
had no check of the model at all.
"""

import os

import grpc
import tensorflow as tf
from flask import Flask, jsonify, request
from keras_image_helper import create_preprocessor
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

host = os.getenv("TF_SERVING_HOST", "localhost:8500")
model_name = os.getenv("SEED_MODEL_NAME", "clothing-model")
size = int(os.getenv("SEED_INPUT_SIZE", "299"))

channel = grpc.insecure_channel(host)
stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

preprocessor = create_preprocessor("xception", target_size=(size, size))

classes = [
    "dress",
    "hat",
    "longsleeve",
    "outwear",
    "pants",
    "shirt",
    "shoes",
    "shorts",
    "skirt",
    "t-shirt",
]


def np_to_protobuf(data):
    """The seed's conversion: TensorFlow's generic tensor proto."""
    return tf.make_tensor_proto(data, shape=data.shape)


def prepare_request(X):
    """The seed's PredictRequest."""
    pb_request = predict_pb2.PredictRequest()
    pb_request.model_spec.name = model_name
    pb_request.model_spec.signature_name = "serving_default"
    pb_request.inputs["input_8"].CopyFrom(np_to_protobuf(X))
    return pb_request


def prepare_response(pb_response):
    """The seed's answer: label -> score."""
    preds = pb_response.outputs["dense_7"].float_val
    return dict(zip(classes, preds, strict=False))


def predict(url):
    """Download, preprocess, call TF Serving, as the seed did."""
    X = preprocessor.from_url(url)
    pb_request = prepare_request(X)
    pb_response = stub.Predict(pb_request, timeout=20.0)
    return prepare_response(pb_response)


app = Flask("gateway")


@app.route("/predict", methods=["POST"])
def predict_endpoint():
    """POST {"url": ...} -> scores."""
    data = request.get_json()
    url = data["url"]
    result = predict(url)
    return jsonify(result)


@app.route("/readyz", methods=["GET"])
def readyz():
    """Added for the cold-start measurement only."""
    return jsonify({"status": "ready"})
