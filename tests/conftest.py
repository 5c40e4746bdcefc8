"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import DATASET_DIR

# The real stack's fixtures (model server, logs), for tests/e2e and tests/reliability, and the
# one headless Chromium every page test shares.
pytest_plugins = ["tests.stack", "tests.browser"]


@pytest.fixture(scope="session")
def dataset_dir() -> Path:
    """The real photos in ../shared/clothing-dataset-small; skips the test when absent."""
    if not (DATASET_DIR / "validation").is_dir():
        pytest.skip(f"dataset not found at {DATASET_DIR} (see its README in ../shared)")
    return DATASET_DIR
