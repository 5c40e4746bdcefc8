"""Fixtures of the real model-serving stack on loopback, shared by tests/e2e and
tests/reliability (registered by `pytest_plugins` in tests/conftest.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clothing_tools.local_stack import Running, free_port, start_model_server
from tests.helpers import DEMO_MODEL_BASE


@pytest.fixture(scope="session")
def model_base() -> Path:
    """The committed demo model."""
    return DEMO_MODEL_BASE


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the processes' log files."""
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def model_server(model_base: Path, logs: Path) -> Iterator[Running]:
    """The model server (tensorflow_model_server if installed, else the devserver)."""
    with start_model_server(
        model_base, grpc_port=free_port(), rest_port=free_port(), python=sys.executable,
        log=logs / "model-server.log",
    ) as running:  # fmt: skip
        yield running
