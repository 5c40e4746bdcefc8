"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASET_DIR = REPO_ROOT.parent / "shared" / "clothing-dataset-small"
DEMO_MODEL_BASE = REPO_ROOT / "services" / "model" / "clothing-model"
GATEWAY_PYTHON = REPO_ROOT / ".venv-gateway" / "bin" / "python"


@pytest.fixture(scope="session")
def dataset_dir() -> Path:
    """The real photos in ../shared/clothing-dataset-small; skips the test when absent."""
    if not (DATASET_DIR / "validation").is_dir():
        pytest.skip(f"dataset not found at {DATASET_DIR} (see its README in ../shared)")
    return DATASET_DIR
