"""Measure an exported model's top-1 accuracy on a dataset split, the way the gateway feeds it.

    python scripts/evaluate_model.py services/model/clothing-model \
        --data-dir ../shared/clothing-dataset-small --split validation \
        [--keras build/demo/clothing_demo.keras]

With --keras it also measures the Keras model through the training pipeline's own input path
(`train_demo_model.load_split`), so training/serving skew shows as the difference of the two.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from gateway.contract import (
    SCORES_OUTPUT,
    SERVING_SIGNATURE,
    ContractError,
    ResizeSpec,
    latest_version_dir,
    read_description,
    resize_spec,
)
from gateway.images import load_model_input

from clothing_tools.train_demo_model import DEFAULT_DATA, UsageError, list_split, load_split


@dataclass(frozen=True)
class Evaluation:
    """Top-1 accuracy and what it was measured on."""

    accuracy: float
    correct: int
    total: int
    path: str


def gateway_input(data: bytes, spec: ResizeSpec) -> np.ndarray:
    """Photo bytes to model input exactly as the gateway's request path prepares them."""
    return load_model_input(data, spec, max_bytes=len(data), max_pixels=100_000_000)


def evaluate_export(version_dir: Path, split_dir: Path, batch_size: int = 64) -> Evaluation:
    """Accuracy of the exported `serving_default` signature on gateway-preprocessed photos."""
    import tensorflow as tf

    description = read_description(version_dir)
    spec = resize_spec(description)
    paths, truth, classes = list_split(split_dir)
    labels = list(description["labels"])
    if sorted(classes) != sorted(labels):
        raise UsageError(f"split classes {classes} differ from the model's labels {labels}")
    predict = tf.saved_model.load(str(version_dir)).signatures[SERVING_SIGNATURE]
    correct = 0
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        images = np.stack([gateway_input(p.read_bytes(), spec) for p in chunk])
        scores = predict(images=tf.constant(images))[SCORES_OUTPUT].numpy()
        predicted = [labels[i] for i in scores.argmax(axis=1)]
        actual = [classes[i] for i in truth[start : start + batch_size]]
        correct += sum(p == a for p, a in zip(predicted, actual, strict=True))
    return Evaluation(
        correct / len(paths), correct, len(paths), "exported signature, gateway resize"
    )


def evaluate_keras(keras_path: Path, split_dir: Path, spec: ResizeSpec) -> Evaluation:
    """Accuracy of the Keras model through the training pipeline's own input path."""
    import keras

    model = keras.models.load_model(keras_path)
    images, truth, _ = load_split(split_dir, spec)
    logits = model.predict(images.astype(np.float32) / 127.5 - 1.0, batch_size=64, verbose=0)
    correct = int((logits.argmax(axis=1) == truth).sum())
    return Evaluation(correct / len(truth), correct, len(truth), "keras model, training input path")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_base", type=Path, help="TF Serving model base path")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--keras", type=Path, help="also evaluate this Keras model")
    args = parser.parse_args(argv)
    try:
        version_dir = latest_version_dir(args.model_base)
        results = [evaluate_export(version_dir, args.data_dir / args.split)]
        if args.keras:
            spec = resize_spec(read_description(version_dir))
            results.append(evaluate_keras(args.keras, args.data_dir / args.split, spec))
    except (UsageError, ContractError) as exc:
        print(f"evaluate_model: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
