"""A small contract-following SavedModel, used only while the demo model is not committed.

A fixed random linear layer on a 4x4 grid of average colours of the 112x112 input: cheap,
yet its top class depends on the exact pixels, so it checks the gateway's preprocessing as
strictly as a trained model would.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

LABELS = (
    "dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt",
    "t-shirt",
)  # fmt: skip
SIZE = 112
GRID = 4


def description(version: int) -> dict[str, object]:
    """The contract's description of this model."""
    return {
        "format": 1,
        "name": "clothing-model",
        "version": version,
        "labels": list(LABELS),
        "input": {"name": "images", "height": SIZE, "width": SIZE, "channels": 3,
                  "dtype": "uint8"},
        "outputs": {"scores": "scores", "labels": "labels"},
        "preprocessing": "xception",
        "resize": {"library": "pillow", "interpolation": "bilinear", "jpeg_draft": True},
        "softmax_added": True,
    }  # fmt: skip


class GridModel(tf.Module):
    def __init__(self, version: int) -> None:
        super().__init__()
        rng = np.random.default_rng(version)
        self.kernel = tf.Variable(rng.normal(size=(GRID * GRID * 3, len(LABELS))).astype("f4"))
        self.labels = tf.constant(LABELS)
        self.text = tf.constant(json.dumps(description(version)))

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.uint8)])
    def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = tf.cast(images, tf.float32) / 127.5 - 1.0
        step = SIZE // GRID
        pooled = tf.nn.avg_pool2d(pixels, ksize=step, strides=step, padding="VALID")
        logits = tf.matmul(tf.reshape(pooled, [-1, GRID * GRID * 3]), self.kernel) * 4.0
        rows = tf.shape(images)[0]
        return {"scores": tf.nn.softmax(logits), "labels": tf.tile(self.labels[None], [rows, 1])}

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.uint8)])
    def describe(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        rows = tf.shape(images)[0]  # batch-major outputs, as TF Serving's batching needs
        return {"description": tf.fill([rows], self.text),
                "labels": tf.tile(self.labels[None], [rows, 1])}  # fmt: skip


def export(base_path: Path, version: int = 1) -> Path:
    """Write base_path/<version>/ with both signatures and the description file."""
    module = GridModel(version)
    target = base_path / str(version)
    tf.saved_model.save(
        module, str(target), signatures={"serving_default": module.serve,
                                         "describe": module.describe}
    )  # fmt: skip
    (target / "assets.extra").mkdir(exist_ok=True)
    (target / "assets.extra" / "model_description.json").write_text(
        json.dumps(description(version))
    )
    return base_path
