"""Train the compact demo clothing classifier from scratch on CPU and save it as .keras.

Photos are decoded and resized with the gateway's own preprocessing (`gateway.preprocessing`),
so the exported model sees exactly the pixels it was trained on.

    python scripts/train_demo_model.py --out build/demo.keras
    python scripts/convert_model.py build/demo.keras services/model --preprocessing xception \
        --interpolation bilinear --jpeg-draft
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from gateway.contract import ResizeSpec
from gateway.preprocessing import to_model_input

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "clothing-dataset-small"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


class UsageError(Exception):
    """Bad command-line input; reported as one line on stderr with exit code 2."""


def list_split(split_dir: Path) -> tuple[list[Path], list[int], list[str]]:
    """List the photos of one split as (paths, class indices, sorted class names)."""
    if not split_dir.is_dir():
        raise UsageError(f"no such dataset split: {split_dir}")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        for path in sorted((split_dir / name).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                labels.append(index)
    if not paths:
        raise UsageError(f"no photos under {split_dir}")
    return paths, labels, classes


def load_split(split_dir: Path, spec: ResizeSpec) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode and resize every photo of a split with the gateway's preprocessing."""
    paths, labels, classes = list_split(split_dir)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        arrays = list(pool.map(lambda p: to_model_input(p.read_bytes(), spec), paths))
    return np.stack(arrays), np.asarray(labels, dtype=np.int32), classes


def build_model(size: int, num_classes: int, width: int, seed: int) -> Any:
    """A small Xception-style residual CNN with in-model augmentation; emits logits."""
    import keras
    from keras import layers

    def conv_bn(
        x: Any, filters: int, kernel: int = 3, strides: int = 1, separable: bool = False
    ) -> Any:
        conv = layers.SeparableConv2D if separable else layers.Conv2D
        x = conv(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.Activation("relu")(x)

    inputs = keras.Input((size, size, 3), name="image")
    x = layers.RandomFlip("horizontal", seed=seed)(inputs)
    x = layers.RandomRotation(0.04, fill_mode="reflect", seed=seed)(x)
    x = layers.RandomZoom((-0.2, 0.1), fill_mode="reflect", seed=seed)(x)
    x = layers.RandomTranslation(0.08, 0.08, fill_mode="reflect", seed=seed)(x)
    x = conv_bn(x, width, strides=2)
    x = conv_bn(x, width)
    for filters in (2 * width, 4 * width, 8 * width, 12 * width):
        residual = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False)(x)
        residual = layers.BatchNormalization()(residual)
        x = conv_bn(x, filters, separable=True)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.Activation("relu")(layers.add([x, residual]))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3, seed=seed)(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="clothing_demo")


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate on the validation split and save the model; return the figures."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    spec = ResizeSpec(args.size, args.size, args.interpolation, args.jpeg_draft)
    started = time.monotonic()
    x_train, y_train, classes = load_split(args.data_dir / "train", spec)
    x_val, y_val, val_classes = load_split(args.data_dir / "validation", spec)
    if classes != val_classes:
        raise UsageError("train and validation splits have different classes")
    print(
        f"loaded {len(x_train)} train / {len(x_val)} validation photos "
        f"in {time.monotonic() - started:.0f}s",
        flush=True,
    )

    def scale(images: Any, labels: Any) -> tuple[Any, Any]:
        # xception-style scaling; the exporter re-adds it in the serving graph
        return tf.cast(images, tf.float32) / 127.5 - 1.0, labels

    train_ds = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
        .shuffle(len(x_train), seed=args.seed, reshuffle_each_iteration=True)
        .batch(args.batch_size)
        .map(scale, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(128).map(scale)

    model = build_model(args.size, len(classes), args.width, args.seed)
    steps = args.epochs * int(np.ceil(len(x_train) / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0,
        steps - args.warmup_epochs * steps // args.epochs,
        warmup_target=args.learning_rate,
        warmup_steps=args.warmup_epochs * steps // args.epochs,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    print(f"model: {model.count_params():,} parameters, input {args.size}px", flush=True)
    history = model.fit(
        train_ds,
        epochs=args.epochs,
        validation_data=val_ds,
        validation_freq=args.validation_every,
        verbose=2,
    )
    _, val_accuracy = model.evaluate(val_ds, verbose=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp.keras")
    model.save(tmp)
    tmp.replace(args.out)
    report = {
        "val_accuracy": float(val_accuracy),
        "train_accuracy": float(history.history["accuracy"][-1]),
        "parameters": int(model.count_params()),
        "labels": classes,
        "input_size": args.size,
        "interpolation": args.interpolation,
        "jpeg_draft": args.jpeg_draft,
        "epochs": args.epochs,
        "seed": args.seed,
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("build/demo/clothing_demo.keras"))
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--warmup-epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--interpolation", default="bilinear")
    parser.add_argument("--no-jpeg-draft", dest="jpeg_draft", action="store_false")
    parser.add_argument("--validation-every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = train(args)
    except UsageError as exc:
        print(f"train_demo_model: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
