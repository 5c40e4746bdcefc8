"""A tiny real SavedModel following docs/model-contract.md, for the devserver tests.

`serving_default`: uint8 `images` [-1, H, W, 3] -> float32 `scores` [-1, K] (softmax of a
linear layer on the mean pixel, scaled x/127.5-1) and string `labels` [K]; `describe`:
the JSON description and the labels. Each version has its own bias so tests can tell
which version answered, and `expected_scores` recomputes the outputs with NumPy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

HEIGHT, WIDTH = 8, 8
LABELS = ("dress", "hat", "shoes")
KERNEL = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [-1.0, 0.5, 2.5]], dtype=np.float32)
BIASES = {1: (0.0, 0.0, 0.0), 2: (0.7, -0.4, 0.1), 3: (-0.3, 0.9, 0.2)}


def description(version: int) -> dict[str, object]:
    """The contract's description for a version of the tiny model."""
    return {
        "format": 1,
        "name": "tiny",
        "version": version,
        "labels": list(LABELS),
        "input": {
            "name": "images",
            "height": HEIGHT,
            "width": WIDTH,
            "channels": 3,
            "dtype": "uint8",
        },
        "outputs": {"scores": "scores", "labels": "labels"},
        "preprocessing": "xception",
    }


class TinyClassifier(tf.Module):
    def __init__(self, version: int) -> None:
        super().__init__()
        self.kernel = tf.Variable(KERNEL)
        self.bias = tf.Variable(np.array(BIASES[version], dtype=np.float32))
        self.labels = tf.constant(LABELS)
        self.text = tf.constant(json.dumps(description(version)))

    @tf.function(input_signature=[tf.TensorSpec([None, HEIGHT, WIDTH, 3], tf.uint8)])
    def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = tf.cast(images, tf.float32) / 127.5 - 1.0
        logits = tf.matmul(tf.reduce_mean(pixels, axis=[1, 2]), self.kernel) + self.bias
        return {"scores": tf.nn.softmax(logits), "labels": self.labels}

    @tf.function(input_signature=[tf.TensorSpec([None, HEIGHT, WIDTH, 3], tf.uint8)])
    def describe(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        del images
        return {"description": self.text, "labels": self.labels}


def expected_scores(images: np.ndarray, version: int) -> np.ndarray:
    """The scores a version computes, recomputed with NumPy."""
    pixels = images.astype(np.float32) / 127.5 - 1.0
    logits = pixels.mean(axis=(1, 2)) @ KERNEL + np.array(BIASES[version], dtype=np.float32)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    scores: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return scores


def random_images(count: int, seed: int) -> np.ndarray:
    """Reproducible uint8 images of the model's input size."""
    return np.random.default_rng(seed).integers(0, 256, (count, HEIGHT, WIDTH, 3), dtype=np.uint8)


def predict_request(
    images: np.ndarray, signature: str = "serving_default"
) -> predict_pb2.PredictRequest:
    """A PredictRequest for the tiny model with `images` as tensor_content."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.model_spec.signature_name = signature
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    return request


def write_warmup(path: Path, requests: Sequence[predict_pb2.PredictRequest]) -> None:
    """assets.extra/tf_serving_warmup_requests as TF Serving reads it."""
    target = path / "assets.extra" / "tf_serving_warmup_requests"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(target)) as writer:
        for request in requests:
            entry = prediction_log_pb2.PredictionLog()
            entry.predict_log.request.CopyFrom(request)
            writer.write(entry.SerializeToString())


def build_version(base_path: Path, version: int) -> Path:
    """Export one version under base_path/<version> with both signatures."""
    module = TinyClassifier(version)
    target = base_path / str(version)
    tf.saved_model.save(
        module,
        str(target),
        signatures={"serving_default": module.serve, "describe": module.describe},
    )
    (target / "assets.extra").mkdir(exist_ok=True)
    (target / "assets.extra" / "model_description.json").write_text(
        json.dumps(description(version))
    )
    return target
