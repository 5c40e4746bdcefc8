"""The committed demo model: accuracy target and no training/serving skew."""

from __future__ import annotations

from pathlib import Path

import pytest
from gateway.contract import latest_version_dir, read_description, resize_spec

from clothing_tools.evaluate_model import evaluate_export, evaluate_keras
from tests.helpers import DEMO_MODEL_BASE, REPO_ROOT

DEMO_KERAS = REPO_ROOT / "services" / "model" / "source" / "clothing_demo.keras"
ACCURACY_TARGET = 0.75


@pytest.fixture(scope="module")
def version_dir() -> Path:
    return latest_version_dir(DEMO_MODEL_BASE)


@pytest.fixture(scope="module")
def served_accuracy(version_dir: Path, dataset_dir: Path) -> float:
    return evaluate_export(version_dir, dataset_dir / "validation").accuracy


def test_demo_model_reaches_accuracy_target(served_accuracy: float) -> None:
    assert served_accuracy >= ACCURACY_TARGET


def test_demo_model_description_matches_training(version_dir: Path) -> None:
    description = read_description(version_dir)
    assert description["labels"] == [
        "dress", "hat", "longsleeve", "outwear", "pants",
        "shirt", "shoes", "shorts", "skirt", "t-shirt",
    ]  # fmt: skip
    assert description["resize"]["interpolation"] == "bilinear"
    assert description["preprocessing"] == "xception"


def test_no_training_serving_skew(
    version_dir: Path, dataset_dir: Path, served_accuracy: float
) -> None:
    spec = resize_spec(read_description(version_dir))
    trained = evaluate_keras(DEMO_KERAS, dataset_dir / "validation", spec).accuracy
    assert abs(served_accuracy - trained) <= 0.01
