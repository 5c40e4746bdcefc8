"""Session-wide real models and exports for the converter tests (built once, read-only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clothing_tools.convert_model import ExportResult, convert
from tests.model_factories import legacy_xception_h5, save_keras_classifier
from tests.scripts.support import KERAS_SIZE, XCEPTION_SIZE


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the source model files."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def keras_model_file(models_dir: Path) -> Path:
    """A Keras 3 .keras classifier with random augmentation layers that emits logits."""
    return save_keras_classifier(models_dir / "tiny_augmented.keras", size=KERAS_SIZE)


@pytest.fixture(scope="session")
def h5_model_file(models_dir: Path) -> Path:
    """A legacy tf_keras .h5 file shaped like the seed's Xception (71x71 input)."""
    return legacy_xception_h5(models_dir / "xception_legacy.h5", size=XCEPTION_SIZE)


@pytest.fixture(scope="session")
def keras_export(keras_model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    """The .keras model exported once with the defaults (xception scaling, default labels)."""
    return convert(keras_model_file, tmp_path_factory.mktemp("keras-export"))


@pytest.fixture(scope="session")
def h5_export(h5_model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    """The legacy Xception .h5 exported once (the slowest conversion: keep it to one)."""
    return convert(
        h5_model_file,
        tmp_path_factory.mktemp("h5-export"),
        interpolation="bilinear",
        jpeg_draft=True,
    )
