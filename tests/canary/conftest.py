"""Fixtures of the canary tests: the model versions, the photos, a folder for logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import model_versions
from tests.canary.support import DEMO_VERSION, PHOTOS_PER_CLASS, Versions
from tests.helpers import DEMO_MODEL_BASE, first_photos_per_class


@pytest.fixture(scope="session")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Versions:
    """The committed demo model and two re-exports of it (built once, in about 30 s)."""
    demo = DEMO_MODEL_BASE / str(DEMO_VERSION)
    if not demo.is_dir():
        pytest.fail(f"the demo model version {DEMO_VERSION} is missing at {demo}")
    root = tmp_path_factory.mktemp("versions")
    reordered = root / "reordered" / "clothing-model"
    resized = root / "resized" / "clothing-model"
    model_versions.reexport(demo, reordered, 3)
    model_versions.reexport(demo, resized, 4, size=96)
    return Versions(DEMO_MODEL_BASE, reordered, resized)


@pytest.fixture(scope="session")
def photos(dataset_dir: Path) -> list[Path]:
    """A few validation photos of every class."""
    return first_photos_per_class(dataset_dir, PHOTOS_PER_CLASS)


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")
