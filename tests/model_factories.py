"""Small real Keras models for tests, saved the ways the converter reads them.

Every factory gives its last Dense layer a kernel scaled so that the model's probabilities are
far from uniform: a parity check on near-uniform outputs could not tell two models apart.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

LABELS = (
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
)
LOGIT_SPREAD = 3.0


@contextlib.contextmanager
def quiet_keras() -> Iterator[None]:
    """Silence the known third-party warnings Keras raises while saving test models."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"__array__ implementation doesn't accept a copy keyword"
        )
        warnings.filterwarnings("ignore", message=r"You are saving your model as an HDF5 file")
        yield


def sample_batch(size: tuple[int, int], batch: int = 8, seed: int = 1) -> np.ndarray:
    """Random uint8 RGB images of the given (height, width)."""
    return np.random.default_rng(seed).integers(0, 256, (batch, *size, 3), dtype=np.uint8)


def _spread_logits(model: Any, penultimate: Any, size: tuple[int, int]) -> None:
    """Scale the last Dense kernel so logits on sample inputs have a standard deviation of 3."""
    dense = model.layers[-1]
    features = penultimate(sample_batch(size) / 127.5 - 1.0, training=False).numpy()
    kernel, bias = dense.get_weights()
    logits = features @ kernel
    kernel = kernel * (LOGIT_SPREAD / max(float(logits.std()), 1e-12))
    dense.set_weights([kernel, bias])


def keras_classifier(
    size: tuple[int | None, int | None] = (32, 32),
    num_classes: int = len(LABELS),
    *,
    channels: int = 3,
    augmentation: bool = True,
    activation: str | None = None,
    noise: bool = False,
    seed: int = 0,
) -> Any:
    """A tiny Keras 3 CNN like the demo model: random augmentation layers, logits by default."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*size, channels), name="image")
    x = inputs
    if augmentation:
        x = layers.RandomFlip("horizontal", seed=seed)(x)
        x = layers.RandomRotation(0.04, fill_mode="reflect", seed=seed)(x)
        x = layers.RandomZoom((-0.2, 0.1), fill_mode="reflect", seed=seed)(x)
        x = layers.RandomTranslation(0.08, 0.08, fill_mode="reflect", seed=seed)(x)
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.SeparableConv2D(16, 3, strides=2, padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3, seed=seed)(x)
    if noise:
        x = InferenceNoise()(x)
    outputs = layers.Dense(num_classes, activation=activation, name="logits")(x)
    model = keras.Model(inputs, outputs, name="tiny_classifier")
    if size[0] is not None and size[1] is not None and channels == 3 and not noise:
        _spread_logits(model, keras.Model(inputs, model.layers[-2].output), (size[0], size[1]))
    return model


def save_keras_classifier(path: Path, **kwargs: Any) -> Path:
    """Build `keras_classifier(**kwargs)` and save it as a Keras 3 `.keras` archive."""
    with quiet_keras():
        keras_classifier(**kwargs).save(path)
    return path


def legacy_xception_h5(path: Path, size: int = 71, num_classes: int = len(LABELS)) -> Path:
    """Save a tf_keras (Keras 2) model shaped like the seed's Xception as a legacy HDF5 file.

    Xception base (weights=None, so nothing is downloaded), input named `input_8`, a small dense
    head and logits from `dense_7`, compiled like a trained model would be.
    """
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    base = tf_keras.applications.Xception(
        weights=None, include_top=False, input_shape=(size, size, 3)
    )
    base.trainable = False
    inputs = tf_keras.Input((size, size, 3), name="input_8")
    x = base(inputs, training=False)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    x = tf_keras.layers.Dense(16, activation="relu")(x)
    x = tf_keras.layers.Dropout(0.2)(x)
    outputs = tf_keras.layers.Dense(num_classes, name="dense_7")(x)
    model = tf_keras.Model(inputs, outputs)
    _spread_logits(model, tf_keras.Model(inputs, model.layers[-2].output), (size, size))
    model.compile(
        optimizer=tf_keras.optimizers.Adam(1e-3),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    with quiet_keras():
        model.save(path)
    return path


def export_test_model(output_dir: Path, **convert_kwargs: Any) -> Any:
    """Save a tiny classifier next to output_dir and convert it; return the converter's result."""
    from clothing_tools.convert_model import convert

    output_dir.mkdir(parents=True, exist_ok=True)
    source = save_keras_classifier(output_dir.parent / f"{output_dir.name}-source.keras")
    return convert(source, output_dir, **convert_kwargs)


def _register_noise_layer() -> Any:
    import keras

    @keras.saving.register_keras_serializable(package="tests")
    class InferenceNoise(keras.layers.Layer):
        """Adds unseeded noise on every call, even at inference: its exports never match it."""

        def __init__(self, stddev: float = 5.0, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.stddev = stddev

        def call(self, inputs: Any) -> Any:
            import tensorflow as tf

            # tf.random, not keras.random: a Keras SeedGenerator is saved with the export and
            # replays the same sequence, so that noise would (correctly) match
            return inputs + tf.random.normal(tf.shape(inputs), stddev=self.stddev)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "stddev": self.stddev}

    return InferenceNoise


InferenceNoise = _register_noise_layer()
