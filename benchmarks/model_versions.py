"""Other versions of the demo model for rollout tests and `make scale`, re-exported from it.

`reexport` wraps the committed demo version in a new SavedModel that follows the model
contract (docs/model-contract.md) with the label order changed (scores permuted with it, so
it is the same classifier) and optionally another input size (resized inside the graph to the
demo's own). A gateway that labels one version's scores with another version's description,
or resizes for the wrong version, gives a wrong top class or an error.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from gateway import contract
from gateway.contract import ResizeSpec
from gateway.preprocessing import to_model_input


def description(version_dir: Path) -> dict[str, Any]:
    """The contract's description file of a version folder."""
    return contract.read_description(version_dir)


def resize_spec(desc: dict[str, Any]) -> ResizeSpec:
    """How the gateway must resize photos for a version."""
    return contract.resize_spec(desc)


class Reordered(tf.Module):
    """The wrapped model with its classes in another order and maybe another input size."""

    def __init__(self, inner_dir: Path, desc: dict[str, Any], order: Sequence[int]) -> None:
        super().__init__()
        inner = description(inner_dir)
        inner_size = inner["input"]
        assert isinstance(inner_size, dict)
        self.inner = tf.saved_model.load(str(inner_dir))
        self.inner_hw = (int(inner_size["height"]), int(inner_size["width"]))
        self.order = tf.constant(list(order), dtype=tf.int32)
        self.labels = tf.constant(desc["labels"])
        self.text = tf.constant(json.dumps(desc))
        size = desc["input"]
        assert isinstance(size, dict)
        spec = tf.TensorSpec([None, int(size["height"]), int(size["width"]), 3], tf.uint8)
        self.serve = tf.function(self._serve, input_signature=[spec])
        self.describe = tf.function(self._describe, input_signature=[spec])

    def _serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        if tuple(images.shape[1:3]) != self.inner_hw:
            resized = tf.image.resize(tf.cast(images, tf.float32), self.inner_hw)
            images = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
        scores = self.inner.signatures["serving_default"](images=images)["scores"]
        rows = tf.shape(images)[0]
        return {
            "scores": tf.gather(scores, self.order, axis=1),
            "labels": tf.tile(self.labels[None], [rows, 1]),
        }

    def _describe(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        rows = tf.shape(images)[0]
        return {
            "description": tf.fill([rows], self.text),
            "labels": tf.tile(self.labels[None], [rows, 1]),
        }


def reexport(
    demo_version: Path,
    base_path: Path,
    version: int,
    *,
    size: int | None = None,
    mislabelled: bool = False,
) -> Path:
    """Write base_path/<version>/: the demo's classes reversed, input `size` if given.

    `mislabelled` reverses only the label list, not the scores: a broken export.
    """
    desc = description(demo_version)
    labels = list(desc["labels"])
    order = list(reversed(range(len(labels))))  # no class keeps its place (10 labels)
    desc.update(version=version, labels=[labels[i] for i in order])
    if mislabelled:
        order = list(range(len(labels)))
    if size is not None:
        desc["input"] = {**desc["input"], "height": size, "width": size}
    module = Reordered(demo_version, desc, order)
    target = base_path / str(version)
    tf.saved_model.save(
        module,
        str(target),
        signatures={"serving_default": module.serve, "describe": module.describe},
    )
    contract.description_path(target).parent.mkdir(exist_ok=True)
    contract.description_path(target).write_text(json.dumps(desc))
    return target


def link_version(source: Path, base_path: Path) -> Path:
    """base_path/<same version> as a copy of a version folder (one base per model server)."""
    target = base_path / source.name
    shutil.copytree(source, target, symlinks=False)
    return target


def top_classes(version_dir: Path, photos: Sequence[Path]) -> list[str]:
    """A version's top class per photo, computed in this process with TensorFlow."""
    desc = description(version_dir)
    spec = resize_spec(desc)
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    labels = list(desc["labels"])
    batch = np.stack([to_model_input(p.read_bytes(), spec) for p in photos])
    scores = serve(images=tf.constant(batch))["scores"].numpy()
    return [labels[int(i)] for i in scores.argmax(axis=1)]


def scores_by_label(version_dir: Path, photos: Sequence[Path]) -> list[dict[str, float]]:
    """A version's scores per photo as {label: probability}, computed in this process."""
    desc = description(version_dir)
    spec = resize_spec(desc)
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    labels = list(desc["labels"])
    batch = np.stack([to_model_input(p.read_bytes(), spec) for p in photos])
    scores = serve(images=tf.constant(batch))["scores"].numpy()
    return [dict(zip(labels, row.tolist(), strict=True)) for row in scores]
